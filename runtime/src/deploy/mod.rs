//! Plugin versions and hot deployment: every plugin runs behind a [`Slot`] that bindings invoke,
//! and the [`Registry`] swaps what is in it.
//!
//! A deploy (the configured file changed, or an upload) loads and validates the new component
//! off the hot path (compile or precompiled cache, import check, the handler world's types, a
//! first instance); only then is it swapped in, atomically: invocations that start afterwards
//! run the new version, invocations in flight finish on the old one (they hold it). A key's next
//! message starts only after its previous one's commit was submitted (the delivery engine's
//! ordering), so per-key order holds across a swap, and the delivery guarantees are untouched:
//! which version handled a message is not part of them.
//!
//! A newly deployed version is on probation for its first `rollback_after` invocations: if more
//! than `rollback_failure_rate` of them fail, the slot swaps the version before it back in at
//! once (it was kept loaded for that), and the failures it caused did not use up the messages'
//! attempts, so they are retried on the restored version. Versions are kept on disk
//! ([`store`]) and survive restarts. When several hosts share a cluster, every deploy and
//! rollback is also recorded there and every host follows it ([`cluster`]).

mod cluster;
pub mod shadow;
mod store;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

pub use cluster::{ActiveVersion, OnChange, SharedVersions};
pub use store::{Origin, StoreError};
pub use watch::Reloader;

use crate::config::{Config, PluginConfig};
use crate::delivery::Handler;
use crate::host::{Host, Invocation, KvGate, LoadError, Message, Plugin, PluginSpec};
use crate::ids::now_ms;
use crate::names::PluginName;
use crate::storage::{Commit, Storage, StorageError};
use store::{VersionRecord, VersionStore};

/// What a binding invokes: the active version of one plugin, swappable while it runs.
pub struct Slot {
    name: PluginName,
    live: ArcSwap<Live>,
    /// Serializes swaps (deploys, rollbacks and probation verdicts).
    swapping: Mutex<()>,
    /// Tells the reloader about automatic rollbacks, which it records on disk.
    events: mpsc::Sender<Work>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("name", &self.name)
            .field("version", &self.live.load().version.seq)
            .finish_non_exhaustive()
    }
}

/// One activation of a version in a slot.
struct Live {
    plugin: Arc<Plugin>,
    version: Arc<VersionStats>,
    activation: Arc<Activation>,
    probation: Option<Probation>,
}

impl Live {
    /// The same version, active again from now (a new activation, no probation).
    fn reactivated(&self) -> Live {
        Live {
            plugin: Arc::clone(&self.plugin),
            version: Arc::clone(&self.version),
            activation: activation(),
            probation: None,
        }
    }
}

/// When a version became active, and when it first ran after that.
#[derive(Debug)]
pub struct Activation {
    /// When it was swapped in.
    pub at: Instant,
    /// When the first invocation after that started.
    pub first_invocation: OnceLock<Instant>,
}

/// A new version being judged, with the version to restore if it fails.
struct Probation {
    previous: Arc<Live>,
    after: u32,
    failures_to_roll_back: u32,
    ran: AtomicU32,
    failed: AtomicU32,
    decided: AtomicBool,
}

/// Counters of one version, since the server started.
#[derive(Debug)]
struct VersionStats {
    seq: u64,
    invocations: AtomicU64,
    failures: AtomicU64,
}

impl VersionStats {
    fn new(seq: u64) -> Arc<VersionStats> {
        Arc::new(VersionStats {
            seq,
            invocations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }
}

impl Handler for Slot {
    fn plugin(&self) -> &PluginName {
        &self.name
    }

    fn version(&self) -> String {
        self.version().to_string()
    }

    fn handle(&self, message: &Message, timeout: Duration) -> Invocation {
        let live = self.live.load_full();
        live.activation.first_invocation.get_or_init(Instant::now);
        let mut invocation = live.plugin.invoke_within(message, timeout);
        let failed = invocation.result.is_err();
        live.version.invocations.fetch_add(1, Relaxed);
        if failed {
            live.version.failures.fetch_add(1, Relaxed);
        }
        if let Some(p) = &live.probation {
            invocation.on_probation = failed;
            self.judge(&live, p, failed);
        }
        invocation
    }
}

impl Slot {
    fn new(name: PluginName, live: Live, events: mpsc::Sender<Work>) -> Slot {
        Slot {
            name,
            live: ArcSwap::from_pointee(live),
            swapping: Mutex::new(()),
            events,
        }
    }

    /// The plugin version invocations start on now.
    pub fn plugin(&self) -> Arc<Plugin> {
        Arc::clone(&self.live.load().plugin)
    }

    /// The active version's number.
    pub fn version(&self) -> u64 {
        self.live.load().version.seq
    }

    /// The current activation (which version, since when, first invocation).
    pub fn activation(&self) -> Arc<Activation> {
        Arc::clone(&self.live.load().activation)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.swapping.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Swaps `live` in; returns what was active.
    fn swap(&self, live: Live) -> Arc<Live> {
        let _g = self.lock();
        self.live.swap(Arc::new(live))
    }

    /// Counts an invocation of a version on probation, and decides when it is due: back to
    /// the previous version when too many failed, kept when enough ran.
    fn judge(&self, live: &Arc<Live>, p: &Probation, failed: bool) {
        let ran = p.ran.fetch_add(1, Relaxed) + 1;
        let failures = if failed {
            p.failed.fetch_add(1, Relaxed) + 1
        } else {
            p.failed.load(Relaxed)
        };
        let roll_back = failures >= p.failures_to_roll_back;
        if !roll_back && ran < p.after {
            return;
        }
        if p.decided.swap(true, Relaxed) {
            return;
        }
        let _g = self.lock();
        if !Arc::ptr_eq(&self.live.load(), live) {
            return; // replaced meanwhile (a deploy or a rollback)
        }
        if roll_back {
            let prev = &p.previous;
            self.live.store(Arc::new(prev.reactivated()));
            let reason = format!(
                "automatic: {failures} of its first {ran} invocations failed (more than {:.0}% of {})",
                100.0 * f64::from(p.failures_to_roll_back - 1) / f64::from(p.after),
                p.after
            );
            tracing::error!(plugin = %self.name, from = live.version.seq, to = prev.version.seq, "rolled back: {reason}");
            let _ = self.events.send(Work::RolledBack {
                plugin: self.name.clone(),
                from: live.version.seq,
                to: prev.version.seq,
                reason,
            });
        } else {
            // Passed: the previous version is let go.
            self.live.store(Arc::new(Live {
                plugin: Arc::clone(&live.plugin),
                version: Arc::clone(&live.version),
                activation: Arc::clone(&live.activation),
                probation: None,
            }));
            tracing::info!(plugin = %self.name, version = live.version.seq, failures, ran, "new version passed its probation");
        }
    }
}

fn activation() -> Arc<Activation> {
    Arc::new(Activation {
        at: Instant::now(),
        first_invocation: OnceLock::new(),
    })
}

/// Work for the reloader thread.
enum Work {
    /// A filesystem event from the watcher.
    Fs(notify::Result<notify::Event>),
    /// A slot rolled a version back on its own; record it.
    RolledBack {
        plugin: PluginName,
        from: u64,
        to: u64,
        reason: String,
    },
    /// The cluster recorded a plugin's active version (any host's write, this one's too).
    Cluster {
        plugin: PluginName,
        record: ActiveVersion,
        revision: u64,
    },
    /// The reloader stops.
    Stop,
}

/// Who a deploy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Asked of this host: recorded in the cluster too, if there is one; a refusal is recorded
    /// only when `record_refusal`.
    Here { record_refusal: bool },
    /// Following the cluster's record (written by any host).
    Following,
}

/// Every plugin's slot, versions and deploy history.
pub struct Registry {
    host: Arc<Host>,
    /// `server.reload_quiet`.
    quiet: Duration,
    storage: Arc<dyn Storage>,
    max_message_size: usize,
    entries: BTreeMap<PluginName, Entry>,
    events: Mutex<Option<mpsc::Receiver<Work>>>,
    sender: mpsc::Sender<Work>,
    /// With several hosts: where their versions are shared.
    shared: Option<Arc<dyn SharedVersions>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("plugins", &self.entries.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

struct Entry {
    slot: Arc<Slot>,
    config: PluginConfig,
    gate: Arc<KvGate>,
    /// A change of the configured file is waiting for its writer to finish.
    pending: AtomicBool,
    /// Serializes deploys and rollbacks of this plugin, held across their load (a compile can
    /// take seconds): one new version is loaded at a time, so a second deploy of the same
    /// content finds it active instead of compiling it again, and the instances loading takes
    /// stay within what the pooling allocator was sized for. Readers never take it.
    changing: Mutex<()>,
    /// The revision of the plugin's cluster record this host last wrote or followed (0: none);
    /// written only under `changing`.
    cluster_revision: AtomicU64,
    /// The versions and counters. Held only briefly (never across a load): listing plugins
    /// and `/metrics` take it from async handlers.
    state: Mutex<EntryState>,
}

struct EntryState {
    store: VersionStore,
    stats: BTreeMap<u64, Arc<VersionStats>>,
    swaps: u64,
    rollbacks: u64,
}

/// A deploy that was refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// SHA-256 of the refused component.
    pub sha256: String,
    /// Where it came from.
    pub origin: Origin,
    /// Why it was refused.
    pub error: String,
}

/// A plugin, as `weir plugin list` and `GET /v1/plugins` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginView {
    /// The plugin.
    pub name: String,
    /// Its configured component file.
    pub path: String,
    /// Whether changes of that file are deployed.
    pub watch: bool,
    /// The active version.
    pub active: u64,
    /// Whether the active version is still being judged (automatic rollback).
    pub on_probation: bool,
    /// A change of the file is waiting for its writer to finish.
    pub pending_change: bool,
    /// Versions swapped in since the server started (deploys and rollbacks).
    pub swaps: u64,
    /// Rollbacks since the server started (by command and automatic).
    pub rollbacks: u64,
    /// Every stored version, oldest first.
    pub versions: Vec<VersionView>,
    /// The latest refused deploys, oldest first.
    pub refusals: Vec<Refusal>,
}

/// One version of a plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionView {
    /// Its sequence number.
    pub version: u64,
    /// SHA-256 of its component.
    pub sha256: String,
    /// Component size in bytes.
    pub size: u64,
    /// `file` or `upload`.
    pub origin: Origin,
    /// `active`, `on-probation`, `rolled-back` or `standby`.
    pub state: String,
    /// When it was first stored (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it last became active.
    pub activated_ms: Option<u64>,
    /// What a rollback from it restores.
    pub previous: Option<u64>,
    /// Invocations since the server started.
    pub invocations: u64,
    /// Failed invocations since the server started.
    pub failures: u64,
    /// Why it was rolled back, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_reason: Option<String>,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployed {
    /// The version active now.
    pub version: VersionView,
    /// False when that content was already active (nothing was swapped).
    pub swapped: bool,
    /// Time to load it (compile or precompiled cache, validate, first instance), in ms.
    pub load_ms: f64,
    /// `compiled` or `cache`.
    pub loaded_from: String,
}

/// Why a deploy or rollback did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// No plugin of that name is configured.
    #[error("no plugin named `{0}`")]
    UnknownPlugin(String),
    /// The component was refused; the running version stays.
    #[error("{0}; version {1} keeps serving")]
    Refused(LoadError, u64),
    /// The version to roll back to is not stored.
    #[error("plugin `{plugin}` has no version {version} (see `weir plugin list`)")]
    UnknownVersion {
        /// The plugin.
        plugin: String,
        /// The asked version.
        version: u64,
    },
    /// Nothing to roll back to.
    #[error("plugin `{0}` has no previous version to roll back to")]
    NoPrevious(String),
    /// The version is already active.
    #[error("version {version} of plugin `{plugin}` is already active")]
    AlreadyActive {
        /// The plugin.
        plugin: String,
        /// The version.
        version: u64,
    },
    /// The version store failed; the running version stays.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store of logs and key-value state failed; the running version stays.
    #[error("the store failed: {0}")]
    Storage(#[from] StorageError),
    /// Another version became active while a shadow rebuild ran: its result is stale.
    #[error(
        "plugin `{plugin}` changed from version {expected} to {active} during the rebuild; version {active} keeps serving (rebuild again)"
    )]
    Changed {
        /// The plugin.
        plugin: String,
        /// The version active when the rebuild started.
        expected: u64,
        /// The version active now.
        active: u64,
    },
    /// Another version became active while a rollback loaded its target.
    #[error(
        "plugin `{plugin}` changed from version {expected} to {active} while the rollback loaded version {target}; version {active} keeps serving (roll back again)"
    )]
    ChangedDuringRollback {
        /// The plugin.
        plugin: String,
        /// The version active when the rollback started.
        expected: u64,
        /// The version active now.
        active: u64,
        /// The version the rollback was loading.
        target: u64,
    },
    /// Another host changed the plugin's active version first; this host follows it.
    #[error(
        "another host changed the active version of plugin `{plugin}` first (the cluster's record is past revision {expected}); this host follows it; nothing was deployed here"
    )]
    Conflict {
        /// The plugin.
        plugin: String,
        /// The revision this host expected.
        expected: u64,
    },
    /// The rebuilt state is too large to swap in one commit.
    #[error(
        "the rebuilt key-value state of plugin `{plugin}` is {bytes} bytes; a rebuild swaps at most {max} in one commit; version {active} keeps serving"
    )]
    TooLarge {
        /// The plugin.
        plugin: String,
        /// The size of the rebuilt state.
        bytes: usize,
        /// [`shadow::MAX_COPY_BYTES`].
        max: usize,
        /// The version that keeps serving.
        active: u64,
    },
}

impl DeployError {
    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            DeployError::UnknownPlugin(_) => "unknown_plugin",
            DeployError::Refused(..) => "invalid_plugin",
            DeployError::UnknownVersion { .. } => "unknown_version",
            DeployError::NoPrevious(_) => "no_previous_version",
            DeployError::AlreadyActive { .. } => "already_active",
            DeployError::Store(_) | DeployError::Storage(_) => "storage_unavailable",
            DeployError::Changed { .. }
            | DeployError::ChangedDuringRollback { .. }
            | DeployError::Conflict { .. } => "version_changed",
            DeployError::TooLarge { .. } => "state_too_large",
        }
    }
}

impl Registry {
    /// Loads every configured plugin's active version: the stored one, unless the configured
    /// file changed since it was last taken (then the file is deployed as a new version; if it
    /// is refused and a stored version exists, that one serves and the refusal is logged).
    /// `data_dir` `None` stores nothing (validating a config). With `shared`, each plugin then
    /// takes the cluster's active version, and follows it from then on.
    pub fn open(
        config: &Config,
        host: Arc<Host>,
        storage: Arc<dyn Storage>,
        data_dir: Option<&Path>,
        shared: Option<Arc<dyn SharedVersions>>,
    ) -> anyhow::Result<Registry> {
        let (sender, receiver) = mpsc::channel();
        let mut registry = Registry {
            host,
            quiet: config.server.reload_quiet,
            storage,
            max_message_size: config.server.max_message_size as usize,
            entries: BTreeMap::new(),
            events: Mutex::new(Some(receiver)),
            sender,
            shared,
        };
        let mut changed_files = Vec::new();
        for (name, p) in &config.plugins {
            let store = match data_dir {
                Some(dir) => VersionStore::open(dir.join("plugins").join(name.as_str()))?,
                None => VersionStore::ephemeral(),
            };
            let (entry, file_changed) = registry.open_entry(name, p, store)?;
            if file_changed {
                changed_files.push(name.clone());
            }
            registry.entries.insert(name.clone(), entry);
        }
        registry.join_cluster(&changed_files)?;
        Ok(registry)
    }

    /// Also returns whether the configured file changed since the last start (with versions
    /// stored) and was deployed.
    fn open_entry(
        &self,
        name: &PluginName,
        p: &PluginConfig,
        mut store: VersionStore,
    ) -> anyhow::Result<(Entry, bool)> {
        let gate = Arc::new(KvGate::default());
        // A shadow rebuild's swap cut off between recording its version and copying its state:
        // the copy is done now, before anything runs on that version. Otherwise whatever a
        // rebuild left in the shadow namespace (one abandoned by a restart) goes.
        if store.copy_pending() {
            let keys = shadow::copy(&*self.storage, &name.shadow(), name).with_context(|| {
                format!("plugin `{name}`: cannot finish the swap of its shadow rebuild")
            })?;
            store.copy_done()?;
            tracing::warn!(plugin = %name, keys, "finished the swap of a shadow rebuild cut off by a stop");
        }
        let cleared = shadow::clear(&*self.storage, &name.shadow())?;
        if cleared > 0 {
            tracing::info!(plugin = %name, keys = cleared, "removed the state of an unfinished shadow rebuild");
        }
        let file = std::fs::read(&p.path);
        let file_hash = file.as_ref().ok().map(|b| crate::host::content_hash(b));
        let taken = file_hash.is_some() && file_hash.as_deref() == store.file_sha256();
        let stored = store.active().cloned();
        let mut file_changed = false;
        let (plugin, seq) = match (file, stored) {
            // The file is new to the store: it is deployed, unless it is refused.
            (Ok(bytes), stored) if !taken || stored.is_none() => {
                let hash = file_hash.clone().unwrap_or_default();
                match (self.load(name, p, &p.path, &bytes, &gate, false), stored) {
                    (Ok(plugin), stored) => {
                        let v = store.deploy(&bytes, &hash, Origin::File, false)?;
                        file_changed = stored.is_some();
                        (plugin, v.seq)
                    }
                    (Err(e), None) => return Err(e.into()),
                    (Err(e), Some(stored)) => {
                        tracing::error!(plugin = %name, "{e}; the stored version {} serves instead", stored.seq);
                        store.refuse(Refusal {
                            at_ms: now_ms(),
                            sha256: hash.clone(),
                            origin: Origin::File,
                            error: e.to_string(),
                        })?;
                        let plugin = self.load_stored(name, p, &store, &stored, &gate)?;
                        (plugin, stored.seq)
                    }
                }
            }
            (file, Some(stored)) => match self.load_stored(name, p, &store, &stored, &gate) {
                Ok(plugin) => (plugin, stored.seq),
                // The stored artifact is damaged (or unreadable): the configured file serves.
                Err(e) => {
                    let Ok(bytes) = file else { return Err(e) };
                    tracing::error!(plugin = %name, "the stored version {} cannot be loaded ({e:#}); deploying the configured file instead", stored.seq);
                    let plugin = self.load(name, p, &p.path, &bytes, &gate, false)?;
                    let hash = crate::host::content_hash(&bytes);
                    if store.by_hash(&hash).is_some() {
                        store.restore_artifact(&bytes, &hash)?;
                    }
                    (
                        plugin,
                        store.deploy(&bytes, &hash, Origin::File, false)?.seq,
                    )
                }
            },
            (Ok(_), None) => unreachable!("a file with nothing stored is deployed above"),
            (Err(e), None) => {
                anyhow::bail!(
                    "plugin `{name}`: cannot read `{}`: {e}, and no version of it is stored",
                    p.path.display()
                )
            }
        };
        let from = plugin.loaded_from().as_str();
        let ms = plugin.load_time().as_secs_f64() * 1e3;
        tracing::info!(plugin = %name, version = seq, from, load_ms = format_args!("{ms:.1}"), "loaded plugin");
        let stats = VersionStats::new(seq);
        let live = Live {
            plugin: Arc::new(plugin),
            version: Arc::clone(&stats),
            activation: activation(),
            probation: None,
        };
        let entry = Entry {
            slot: Arc::new(Slot::new(name.clone(), live, self.sender.clone())),
            config: p.clone(),
            gate,
            pending: AtomicBool::new(false),
            changing: Mutex::new(()),
            cluster_revision: AtomicU64::new(0),
            state: Mutex::new(EntryState {
                store,
                stats: BTreeMap::from([(seq, stats)]),
                swaps: 0,
                rollbacks: 0,
            }),
        };
        Ok((entry, file_changed))
    }

    fn load(
        &self,
        name: &PluginName,
        p: &PluginConfig,
        path: &Path,
        bytes: &[u8],
        gate: &Arc<KvGate>,
        background: bool,
    ) -> Result<Plugin, LoadError> {
        let spec = PluginSpec {
            name: name.clone(),
            path: path.to_owned(),
            limits: p.limits,
            publish: p.publish.clone(),
            max_message_size: self.max_message_size,
            instances: p.instances,
        };
        self.host.load_bytes(
            spec,
            bytes,
            Arc::clone(&self.storage),
            Arc::clone(gate),
            background,
        )
    }

    fn load_stored(
        &self,
        name: &PluginName,
        p: &PluginConfig,
        store: &VersionStore,
        v: &VersionRecord,
        gate: &Arc<KvGate>,
    ) -> anyhow::Result<Plugin> {
        let bytes = store.read_artifact(v)?;
        let path = store.artifact(&v.sha256);
        Ok(self.load(name, p, &path, &bytes, gate, false)?)
    }

    /// The plugins' names.
    pub fn names(&self) -> impl Iterator<Item = &PluginName> {
        self.entries.keys()
    }

    /// Whether a plugin of that name is configured.
    pub fn contains(&self, name: &PluginName) -> bool {
        self.entries.contains_key(name)
    }

    /// How many plugins there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A plugin's slot, which bindings invoke.
    pub fn slot(&self, name: &PluginName) -> Option<&Arc<Slot>> {
        self.entries.get(name).map(|e| &e.slot)
    }

    fn entry(&self, name: &str) -> Result<(&PluginName, &Entry), DeployError> {
        PluginName::new(name)
            .ok()
            .and_then(|n| self.entries.get_key_value(&n))
            .ok_or_else(|| DeployError::UnknownPlugin(name.to_owned()))
    }

    /// Deploys a component as the plugin's active version: loads and validates it (compiled or
    /// from the precompiled cache), swaps it in, then records it on disk. A refused component
    /// changes nothing but the plugin's list of refusals.
    pub fn deploy(
        &self,
        plugin: &str,
        bytes: &[u8],
        origin: Origin,
    ) -> Result<Deployed, DeployError> {
        let (name, entry) = self.entry(plugin)?;
        let hash = crate::host::content_hash(bytes);
        let _changing = entry.changing();
        let mode = Mode::Here {
            record_refusal: true,
        };
        self.deploy_inner(name, entry, bytes, &hash, origin, mode)
    }

    /// Deploys the plugin's configured file when its content is new. `Ok(None)`: nothing new.
    /// A refusal is recorded only when `final_attempt` (the writer may not be done yet).
    fn deploy_file(
        &self,
        plugin: &PluginName,
        final_attempt: bool,
    ) -> Result<Option<Deployed>, DeployError> {
        let Some((name, entry)) = self.entries.get_key_value(plugin) else {
            return Ok(None);
        };
        let bytes = match std::fs::read(&entry.config.path) {
            Ok(b) => b,
            Err(e) => {
                if final_attempt {
                    tracing::warn!(plugin = %plugin, path = %entry.config.path.display(), "cannot read the plugin file ({e}); version {} keeps serving", entry.slot.version());
                }
                return Ok(None);
            }
        };
        let hash = crate::host::content_hash(&bytes);
        if entry.lock().store.file_sha256() == Some(hash.as_str()) {
            return Ok(None);
        }
        let _changing = entry.changing();
        let mode = Mode::Here {
            record_refusal: final_attempt,
        };
        self.deploy_inner(name, entry, &bytes, &hash, Origin::File, mode)
            .map(Some)
    }

    /// The caller holds `changing`.
    fn deploy_inner(
        &self,
        name: &PluginName,
        entry: &Entry,
        bytes: &[u8],
        hash: &str,
        origin: Origin,
        mode: Mode,
    ) -> Result<Deployed, DeployError> {
        let record_refusal = mode
            != Mode::Here {
                record_refusal: false,
            };
        if let Some(unchanged) = entry.unchanged(&mut entry.lock(), hash, origin)? {
            return Ok(unchanged);
        }
        let path = match origin {
            Origin::File => entry.config.path.clone(),
            Origin::Upload => PathBuf::from("uploaded component"),
        };
        // Without the state lock: listing plugins and `/metrics` answer while it compiles.
        tracing::info!(plugin = %name, ?origin, "loading a new plugin version");
        let loaded = self.load(name, &entry.config, &path, bytes, &entry.gate, true);
        // Recorded in the cluster before it is swapped in here: the record decides, and a
        // refused write (another host's deploy came first) leaves this host as it is.
        if loaded.is_ok() && mode != Mode::Following {
            self.publish_version(name, entry, hash, bytes, None)?;
        }
        let mut st = entry.lock();
        // Looked at again: an automatic rollback may have changed the active version meanwhile
        // (even to this content), and the probation keeps whatever is active now.
        if let Some(unchanged) = entry.unchanged(&mut st, hash, origin)? {
            return Ok(unchanged);
        }
        let current = entry.slot.live.load_full();
        let plugin = match loaded {
            Ok(p) => Arc::new(p),
            Err(e) => {
                if record_refusal {
                    tracing::error!(plugin = %name, "deploy refused: {e}; version {} keeps serving", current.version.seq);
                    st.store.refuse(Refusal {
                        at_ms: now_ms(),
                        sha256: hash.to_owned(),
                        origin,
                        error: e.to_string(),
                    })?;
                }
                return Err(DeployError::Refused(e, current.version.seq));
            }
        };
        let (load_ms, loaded_from) = (plugin.load_time().as_secs_f64() * 1e3, plugin.loaded_from());
        let seq = st.store.seq_for(hash);
        let stats = Arc::clone(
            st.stats
                .entry(seq)
                .or_insert_with(|| VersionStats::new(seq)),
        );
        let probation = entry
            .config
            .rollback
            .failures_to_roll_back()
            .map(|n| Probation {
                previous: Arc::new(Live {
                    plugin: Arc::clone(&current.plugin),
                    version: Arc::clone(&current.version),
                    activation: Arc::clone(&current.activation),
                    probation: None,
                }),
                after: entry.config.rollback.after,
                failures_to_roll_back: n,
                ran: AtomicU32::new(0),
                failed: AtomicU32::new(0),
                decided: AtomicBool::new(false),
            });
        let before = entry.slot.swap(Live {
            plugin,
            version: stats,
            activation: activation(),
            probation,
        });
        // A change of the configured file is recorded by the reloader's next flush: swaps
        // driven by file writes do not each wait for (and add) a manifest fsync.
        match st.store.deploy(bytes, hash, origin, origin == Origin::File) {
            Ok(v) => debug_assert_eq!(v.seq, seq),
            Err(e) => {
                // Not recorded, so not deployed: the version before comes back.
                entry.slot.swap(before.reactivated());
                entry.follow_own_record(mode != Mode::Following);
                tracing::error!(plugin = %name, "cannot record the new version ({e}); version {} keeps serving", before.version.seq);
                return Err(e.into());
            }
        }
        st.swaps += 1;
        let from = loaded_from.as_str();
        tracing::info!(plugin = %name, version = seq, previous = before.version.seq, from, load_ms = format_args!("{load_ms:.1}"), ?origin, "deployed a new plugin version");
        let live = entry.slot.live.load_full();
        Ok(Deployed {
            version: st.view(seq, &live),
            swapped: true,
            load_ms,
            loaded_from: from.to_owned(),
        })
    }

    /// Rolls a plugin back: to `to`, or to the version that was active before the current one.
    pub fn rollback(&self, plugin: &str, to: Option<u64>) -> Result<Deployed, DeployError> {
        let (name, entry) = self.entry(plugin)?;
        let _changing = entry.changing();
        let from = entry.slot.version();
        let target = {
            let st = entry.lock();
            let target = match to {
                Some(v) => v,
                None => st
                    .store
                    .get(from)
                    .and_then(|v| v.previous)
                    .ok_or_else(|| DeployError::NoPrevious(name.to_string()))?,
            };
            if target == from {
                return Err(DeployError::AlreadyActive {
                    plugin: name.to_string(),
                    version: target,
                });
            }
            target
        };
        self.roll_back_to(name, entry, from, target, "rolled back by command", true)
    }

    /// Makes the stored version `target` active again instead of `from`, recorded in the
    /// cluster too when `share`. The caller holds `changing`.
    fn roll_back_to(
        &self,
        name: &PluginName,
        entry: &Entry,
        from: u64,
        target: u64,
        reason: &str,
        share: bool,
    ) -> Result<Deployed, DeployError> {
        let (sha256, bytes, path) = {
            let st = entry.lock();
            let record = st
                .store
                .get(target)
                .ok_or_else(|| DeployError::UnknownVersion {
                    plugin: name.to_string(),
                    version: target,
                })?;
            let bytes = st.store.read_artifact(record)?;
            (
                record.sha256.clone(),
                bytes,
                st.store.artifact(&record.sha256),
            )
        };
        // Without the state lock, like a deploy's load.
        let plugin = self
            .load(name, &entry.config, &path, &bytes, &entry.gate, true)
            .map_err(|e| DeployError::Refused(e, from))?;
        if share {
            self.publish_version(name, entry, &sha256, &bytes, Some(reason))?;
        }
        let (load_ms, loaded_from) = (plugin.load_time().as_secs_f64() * 1e3, plugin.loaded_from());
        let mut st = entry.lock();
        // An automatic rollback may have changed the active version meanwhile: what this
        // rollback was asked to undo is gone.
        let active = entry.slot.version();
        if active != from {
            entry.follow_own_record(share);
            return Err(DeployError::ChangedDuringRollback {
                plugin: name.to_string(),
                expected: from,
                active,
                target,
            });
        }
        let stats = Arc::clone(
            st.stats
                .entry(target)
                .or_insert_with(|| VersionStats::new(target)),
        );
        let before = entry.slot.swap(Live {
            plugin: Arc::new(plugin),
            version: stats,
            activation: activation(),
            probation: None,
        });
        if let Err(e) = st.store.roll_back(target, reason) {
            entry.slot.swap(before.reactivated());
            entry.follow_own_record(share);
            return Err(e.into());
        }
        st.swaps += 1;
        st.rollbacks += 1;
        tracing::warn!(plugin = %name, from, to = target, "{reason}");
        let live = entry.slot.live.load_full();
        Ok(Deployed {
            version: st.view(target, &live),
            swapped: true,
            load_ms,
            loaded_from: loaded_from.as_str().to_owned(),
        })
    }

    /// Loads a version for a shadow rebuild: validated like a deploy, with the plugin's limits
    /// and grants, but reading and writing the shadow key-value namespace
    /// ([`PluginName::shadow`]) under a gate of its own. Returns it with the version active
    /// now. Nothing is swapped; a refusal is recorded like a deploy's.
    pub fn load_shadow(&self, plugin: &str, bytes: &[u8]) -> Result<(Plugin, u64), DeployError> {
        let (name, entry) = self.entry(plugin)?;
        let active = entry.slot.version();
        let path = PathBuf::from("uploaded component");
        let gate = Arc::new(KvGate::default());
        match self.load(&name.shadow(), &entry.config, &path, bytes, &gate, true) {
            Ok(p) => Ok((p, active)),
            Err(e) => {
                tracing::error!(plugin = %name, "rebuild refused: {e}; version {active} keeps serving");
                entry.lock().store.refuse(Refusal {
                    at_ms: now_ms(),
                    sha256: crate::host::content_hash(bytes),
                    origin: Origin::Upload,
                    error: e.to_string(),
                })?;
                Err(DeployError::Refused(e, active))
            }
        }
    }

    /// Swaps in a version rebuilt in shadow, if `base` is still active: records it as the
    /// active version (with its state copy marked due), replaces the plugin's key-value state
    /// with the shadow namespace's in one commit, marks the copy done and swaps the slot (no
    /// probation: the version before does not fit the rebuilt state). Whatever consumes the
    /// plugin's state must be stopped; a crash after the record and before the copy is
    /// finished by [`Registry::open`].
    pub fn swap_rebuilt(
        &self,
        plugin: &PluginName,
        bytes: &[u8],
        base: u64,
    ) -> Result<Deployed, DeployError> {
        let (name, entry) = self.entry(plugin.as_str())?;
        let hash = crate::host::content_hash(bytes);
        let path = PathBuf::from("uploaded component");
        // Compiled already by the shadow's load: this one comes from the cache.
        let loaded = self
            .load(name, &entry.config, &path, bytes, &entry.gate, true)
            .map_err(|e| DeployError::Refused(e, base))?;
        let (load_ms, loaded_from) = (loaded.load_time().as_secs_f64() * 1e3, loaded.loaded_from());
        let (writes, size) = shadow::copy_writes(&*self.storage, &name.shadow(), name);
        if size > shadow::MAX_COPY_BYTES {
            return Err(DeployError::TooLarge {
                plugin: name.to_string(),
                bytes: size,
                max: shadow::MAX_COPY_BYTES,
                active: base,
            });
        }
        let mut st = entry.lock();
        let active = entry.slot.version();
        if active != base {
            return Err(DeployError::Changed {
                plugin: name.to_string(),
                expected: base,
                active,
            });
        }
        let record = st.store.deploy_rebuilt(bytes, &hash, Origin::Upload)?;
        if !writes.1.is_empty()
            && let Err(e) = self.storage.commit(Commit {
                kv: Some(writes),
                ..Commit::default()
            })
        {
            // Not copied: the version before stays (the restart would redo the copy if this
            // record cannot be written either).
            if st
                .store
                .roll_back(base, "its shadow rebuild's state could not be swapped in")
                .is_ok()
            {
                let _ = st.store.copy_done();
            }
            return Err(e.into());
        }
        if let Err(e) = st.store.copy_done() {
            // The copy is done; a restart redoes it (it is idempotent).
            tracing::warn!(plugin = %name, "cannot record the rebuild's copy as done ({e}); a restart copies again");
        }
        let seq = record.seq;
        let stats = Arc::clone(
            st.stats
                .entry(seq)
                .or_insert_with(|| VersionStats::new(seq)),
        );
        let before = entry.slot.swap(Live {
            plugin: Arc::new(loaded),
            version: stats,
            activation: activation(),
            probation: None,
        });
        st.swaps += 1;
        tracing::info!(plugin = %name, version = seq, previous = before.version.seq, "swapped in a version rebuilt in shadow");
        let live = entry.slot.live.load_full();
        Ok(Deployed {
            version: st.view(seq, &live),
            swapped: true,
            load_ms,
            loaded_from: loaded_from.as_str().to_owned(),
        })
    }

    /// Writes the manifests of plugins whose file-driven deploys were not written yet.
    fn flush(&self) {
        for (name, e) in &self.entries {
            if let Err(err) = e.lock().store.flush() {
                tracing::error!(plugin = %name, "cannot record plugin versions: {err}");
            }
        }
    }

    /// Records an automatic rollback a slot made.
    fn rolled_back(&self, plugin: &PluginName, from: u64, to: u64, reason: &str) {
        let Some((name, entry)) = self.entries.get_key_value(plugin) else {
            return;
        };
        {
            let mut st = entry.lock();
            st.swaps += 1;
            st.rollbacks += 1;
            if st.store.active().map(|v| v.seq) == Some(from)
                && let Err(e) = st.store.roll_back(to, reason)
            {
                tracing::error!(plugin = %plugin, "cannot record the automatic rollback: {e}");
            }
        }
        self.publish_rollback(name, entry, to, reason);
    }

    /// Every plugin with its versions.
    pub fn list(&self) -> Vec<PluginView> {
        self.entries.iter().map(|(name, e)| e.view(name)).collect()
    }

    /// One plugin with its versions.
    pub fn get(&self, plugin: &str) -> Result<PluginView, DeployError> {
        let (name, e) = self.entry(plugin)?;
        Ok(e.view(name))
    }

    fn take_events(&self) -> Option<mpsc::Receiver<Work>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After this host recorded a version in the cluster (`recorded`) and then did not swap it
    /// in: the record is followed like another host's when the watcher delivers it. Under
    /// `changing`.
    fn follow_own_record(&self, recorded: bool) {
        if recorded {
            self.cluster_revision
                .store(0, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Taken by a deploy or rollback for its whole length (see [`Entry::changing`]).
    fn changing(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a deploy of content `hash` answers when that content is active already (and a
    /// configured file's content is recorded as seen); `None` when it is not.
    fn unchanged(
        &self,
        st: &mut EntryState,
        hash: &str,
        origin: Origin,
    ) -> Result<Option<Deployed>, DeployError> {
        let current = self.slot.live.load_full();
        if st.store.get(current.version.seq).map(|v| v.sha256.as_str()) != Some(hash) {
            return Ok(None);
        }
        if origin == Origin::File {
            st.store.saw_file(hash)?;
        }
        Ok(Some(Deployed {
            version: st.view(current.version.seq, &current),
            swapped: false,
            load_ms: 0.0,
            loaded_from: "cache".to_owned(),
        }))
    }

    fn view(&self, name: &PluginName) -> PluginView {
        let st = self.lock();
        let live = self.slot.live.load_full();
        PluginView {
            name: name.to_string(),
            path: self.config.path.display().to_string(),
            watch: self.config.watch,
            active: live.version.seq,
            on_probation: live.probation.is_some(),
            pending_change: self.pending.load(Relaxed),
            swaps: st.swaps,
            rollbacks: st.rollbacks,
            versions: st
                .store
                .versions()
                .iter()
                .map(|v| st.view(v.seq, &live))
                .collect(),
            refusals: st.store.refusals().to_vec(),
        }
    }
}

impl EntryState {
    fn view(&self, seq: u64, live: &Live) -> VersionView {
        let (invocations, failures) = self
            .stats
            .get(&seq)
            .map(|s| (s.invocations.load(Relaxed), s.failures.load(Relaxed)))
            .unwrap_or_default();
        let record = self.store.get(seq);
        let state = if live.version.seq == seq {
            if live.probation.is_some() {
                "on-probation"
            } else {
                "active"
            }
        } else if record.is_some_and(|r| r.rolled_back.is_some()) {
            "rolled-back"
        } else {
            "standby"
        };
        VersionView {
            version: seq,
            sha256: record.map(|r| r.sha256.clone()).unwrap_or_default(),
            size: record.map(|r| r.size).unwrap_or_default(),
            origin: record.map(|r| r.origin).unwrap_or(Origin::File),
            state: state.to_owned(),
            created_ms: record.map(|r| r.created_ms).unwrap_or_default(),
            activated_ms: record.and_then(|r| r.activated_ms),
            previous: record.and_then(|r| r.previous),
            invocations,
            failures,
            rolled_back_reason: record
                .and_then(|r| r.rolled_back.as_ref().map(|b| b.reason.clone())),
        }
    }
}
