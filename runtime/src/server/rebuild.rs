//! Shadow rebuilds (`weir plugin deploy --rebuild`, `POST /v1/plugins/{name}/versions?rebuild=true`):
//! a new version of a plugin rebuilds its key-value state from offset 0 of its binding's source
//! into a separate namespace while the running version keeps serving, and is swapped in once it
//! has caught up.
//!
//! How (see ARCHITECTURE.md, "Shadow rebuilds"):
//! 1. The new version is loaded against the shadow namespace ([`PluginName::shadow`]), which
//!    is cleared first. It handles the source's records in order, one at a time, up to the live
//!    binding's cursor (everything below it the live binding has acknowledged), and keeps up
//!    with it. Its key-value writes go to the shadow namespace; its publishes are dropped (the
//!    running version published for those records already).
//! 2. Caught up, the live binding is stopped: its batch in flight finishes and its commits are
//!    durable. The shadow then handles exactly the records the live binding acknowledged (below
//!    its cursor, and those acknowledged out of order above it), so the rebuilt state folds the
//!    same records the old state did.
//! 3. The swap ([`Registry::swap_rebuilt`](crate::deploy::Registry::swap_rebuilt)) records the
//!    new version, replaces the plugin's state with the shadow's in one commit and swaps the
//!    slot; the binding starts again on the new version from where the old one stopped. Nothing
//!    is handled twice by the new version, nothing skipped.
//!
//! A rebuild ends with its server: one under way when the server stops is abandoned (the
//! running version keeps serving; its shadow state is removed at the next start). A swap cut
//! off after its version was recorded is finished at the next start, before any binding runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Runtime;
use crate::config::BindingConfig;
use crate::delivery::{BindingStats, Handler, Parking};
use crate::deploy::{DeployError, shadow};
use crate::host::{Message, Outcome, Plugin};
use crate::ids::now_ms;
use crate::names::{Attempt, Offset, PluginName};
use crate::storage::{Commit, CommitTicket, Storage, StorageError, Stored};

/// Records the shadow reads at a time.
const READ: usize = 256;
/// The longest wait before retrying a record that failed in the shadow.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Lets a rebuild stop one binding and start it again while the server runs.
#[derive(Debug)]
pub(crate) struct BindingControl {
    paused: watch::Sender<bool>,
    running: watch::Sender<bool>,
}

impl Default for BindingControl {
    fn default() -> BindingControl {
        BindingControl {
            paused: watch::Sender::new(false),
            running: watch::Sender::new(false),
        }
    }
}

impl BindingControl {
    /// Stops the binding (its batch in flight finishes and its commits are durable) and
    /// returns once it has; it stays stopped until [`BindingControl::resume`].
    async fn pause(&self) {
        self.paused.send_replace(true);
        let mut running = self.running.subscribe();
        let _ = running.wait_for(|r| !*r).await;
    }

    fn resume(&self) {
        self.paused.send_replace(false);
    }
}

/// The first wait before restarting a binding that stopped on an error; it doubles with every
/// failure in a row up to [`RESTART_MAX`].
const RESTART_FIRST: Duration = Duration::from_millis(100);
/// The longest wait before restarting a failed binding.
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A run that lasted this long before failing counts as healthy: the next wait starts over.
const RESTART_HEALTHY: Duration = Duration::from_secs(60);
/// Test fault: a binding of this name panics in its first run (the supervisor must log it,
/// report it down and restart it).
const PANIC_ENV: &str = "WEIR_FAULT_BINDING_PANIC";

/// Runs a binding until `stop` turns true, stopping and starting it again whenever its
/// control asks, and supervising it: a run that ends on an error or a panic is logged, counted
/// (the binding is reported down in its stats, `/metrics` and `/v1/health`) and started again
/// after a backoff. A restart is safe: what was not durably acknowledged is delivered again.
pub(crate) async fn supervise(
    binding: BindingConfig,
    handler: Arc<dyn Handler>,
    storage: Arc<dyn Storage>,
    stats: Arc<BindingStats>,
    parking: Arc<Parking>,
    control: Arc<BindingControl>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StorageError> {
    let mut paused = control.paused.subscribe();
    let mut wait = RESTART_FIRST;
    let mut first = true;
    loop {
        tokio::select! {
            _ = paused.wait_for(|p| !*p) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        if *stop.borrow() {
            return Ok(());
        }
        let (tx, rx) = watch::channel(false);
        control.running.send_replace(true);
        let fault = first && std::env::var(PANIC_ENV).is_ok_and(|b| b == binding.name.as_str());
        first = false;
        let run = crate::delivery::run_binding(
            binding.clone(),
            Arc::clone(&handler),
            Arc::clone(&storage),
            Arc::clone(&stats),
            Arc::clone(&parking),
            rx,
        );
        // Its own task, so that a panic in it ends only this run.
        let started = Instant::now();
        let mut run = tokio::spawn(async move {
            if fault {
                panic!("injected by {PANIC_ENV}");
            }
            run.await
        });
        let finished = tokio::select! {
            r = &mut run => Some(r),
            _ = stop.wait_for(|s| *s) => None,
            _ = paused.wait_for(|p| *p) => None,
        };
        let result = match finished {
            Some(r) => r,
            None => {
                tx.send_replace(true);
                run.await
            }
        };
        control.running.send_replace(false);
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) if e.is_panic() => Some(format!("panicked: {}", panic_text(e.into_panic()))),
            Err(e) => Some(e.to_string()),
        };
        let Some(error) = error else {
            if *stop.borrow() || !*paused.borrow() {
                return Ok(()); // stopped, or ended on its own (the store is closing)
            }
            continue; // paused: wait to be resumed
        };
        if started.elapsed() >= RESTART_HEALTHY {
            wait = RESTART_FIRST;
        }
        tracing::error!(
            binding = %binding.name,
            restart_in_ms = wait.as_millis() as u64,
            "binding stopped: {error}; it is restarted (what it had not acknowledged is delivered again)"
        );
        stats.stopped(error);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        wait = (wait * 2).min(RESTART_MAX);
        stats.restarted();
        tracing::info!(binding = %binding.name, "binding restarted");
    }
}

/// The message of a panic payload.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast::<&'static str>()
            .map_or_else(|_| "(no message)".to_owned(), |s| (*s).to_owned()),
    }
}

/// A rebuild, as `GET /v1/plugins/{name}/rebuild`, `weir stats` and `weir plugin deploy
/// --rebuild` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RebuildView {
    /// The plugin.
    pub plugin: String,
    /// The binding whose source it rebuilds from.
    pub binding: String,
    /// That source.
    pub source: String,
    /// `rebuilding` (catching up with the live binding), `swapping` (the live binding is
    /// stopped), `done` or `failed`.
    pub phase: String,
    /// The version serving while it ran.
    pub from_version: u64,
    /// The version it swapped in, when done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// SHA-256 of the rebuilt component.
    pub sha256: String,
    /// The next offset of the source the shadow handles.
    pub position: u64,
    /// The live binding's cursor, when last looked at.
    pub live_cursor: u64,
    /// Records the new version handled.
    pub handled: u64,
    /// Records it failed for good (after the binding's `max_attempts`); their effects are not
    /// in the rebuilt state.
    pub failed: u64,
    /// The first of those failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// Publishes dropped (the running version made them when it handled those records).
    pub publishes_dropped: u64,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// How long the live binding was stopped for the swap, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<f64>,
    /// Why it failed (the running version kept serving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RebuildView {
    fn running(&self) -> bool {
        matches!(self.phase.as_str(), "rebuilding" | "swapping")
    }
}

/// The rebuilds of this server's life, latest per plugin.
#[derive(Debug, Default)]
pub(crate) struct Rebuilds(Mutex<BTreeMap<PluginName, Arc<Mutex<RebuildView>>>>);

impl Rebuilds {
    pub(crate) fn views(&self) -> BTreeMap<String, RebuildView> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(k, v)| (k.to_string(), lock(v).clone()))
            .collect()
    }
}

fn lock(v: &Mutex<RebuildView>) -> std::sync::MutexGuard<'_, RebuildView> {
    v.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a rebuild did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// The new version was refused, or the plugin is unknown.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// One is running for that plugin.
    #[error("plugin `{0}` is being rebuilt already (see GET /v1/plugins/{0}/rebuild)")]
    Busy(String),
    /// A rebuild replays one binding's source; the plugin has none, or several.
    #[error(
        "plugin `{plugin}` has {bindings} bindings; a shadow rebuild replays the source of exactly one"
    )]
    Bindings {
        /// The plugin.
        plugin: String,
        /// How many bindings it has.
        bindings: usize,
    },
    /// The source's start was removed by retention: the state cannot be rebuilt from it.
    #[error(
        "`{source_name}` no longer holds offset 0 (retention removed everything before offset {first}); a shadow rebuild needs the whole history"
    )]
    HistoryGone {
        /// The source.
        source_name: String,
        /// Its first offset.
        first: u64,
    },
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error("the store failed: {0}")]
    Storage(#[from] StorageError),
}

impl RebuildError {
    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            RebuildError::Deploy(e) => e.code(),
            RebuildError::Busy(_) => "rebuild_running",
            RebuildError::Bindings { .. } => "not_rebuildable",
            RebuildError::HistoryGone { .. } => "history_gone",
            RebuildError::ShuttingDown => "shutting_down",
            RebuildError::Storage(_) => "storage_unavailable",
        }
    }
}

impl Runtime {
    /// Starts a shadow rebuild of `plugin` with the component `bytes` (blocking: it is loaded,
    /// and compiled when new, here). Returns at once with its view; it goes on in the
    /// background ([`Runtime::rebuild`] follows it).
    pub fn start_rebuild(
        self: &Arc<Self>,
        plugin: &str,
        bytes: Vec<u8>,
    ) -> Result<RebuildView, RebuildError> {
        if self.is_closing() {
            return Err(RebuildError::ShuttingDown);
        }
        let view = self.plugins.get(plugin)?;
        let name = PluginName::new(view.name)
            .map_err(|_| RebuildError::Deploy(DeployError::UnknownPlugin(plugin.to_owned())))?;
        let bound: Vec<&BindingConfig> = self
            .config
            .bindings
            .iter()
            .filter(|b| b.plugin == name)
            .collect();
        let [binding] = bound[..] else {
            return Err(RebuildError::Bindings {
                plugin: name.to_string(),
                bindings: bound.len(),
            });
        };
        let (first, _) = self.storage.usage(&binding.source)?;
        if first.0 > 0 {
            return Err(RebuildError::HistoryGone {
                source_name: binding.source.to_string(),
                first: first.0,
            });
        }
        // Claimed before loading: two uploads at once do not both compile.
        let state = {
            let mut map = self
                .rebuilds
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if map.get(&name).is_some_and(|v| lock(v).running()) {
                return Err(RebuildError::Busy(name.to_string()));
            }
            let state = Arc::new(Mutex::new(RebuildView {
                plugin: name.to_string(),
                binding: binding.name.to_string(),
                source: binding.source.to_string(),
                phase: "rebuilding".to_owned(),
                from_version: view.active,
                version: None,
                sha256: crate::host::content_hash(&bytes),
                position: 0,
                live_cursor: self.storage.cursor(&binding.name).0,
                handled: 0,
                failed: 0,
                first_failure: None,
                publishes_dropped: 0,
                started_ms: now_ms(),
                finished_ms: None,
                paused_ms: None,
                error: None,
            }));
            map.insert(name.clone(), Arc::clone(&state));
            state
        };
        let fail = |e: RebuildError| {
            let mut v = lock(&state);
            v.phase = "failed".to_owned();
            v.error = Some(e.to_string());
            v.finished_ms = Some(now_ms());
            e
        };
        let (shadow, base) = self
            .plugins
            .load_shadow(name.as_str(), &bytes)
            .map_err(|e| fail(e.into()))?;
        if let Err(e) = shadow::clear(&*self.storage, &name.shadow()) {
            return Err(fail(e.into()));
        }
        {
            let mut v = lock(&state);
            v.from_version = base;
        }
        let job = Job {
            rt: Arc::clone(self),
            plugin: name.clone(),
            binding: binding.clone(),
            control: Arc::clone(&self.controls[&binding.name]),
            shadow,
            bytes,
            base,
            state: Arc::clone(&state),
            last: None,
        };
        tracing::info!(plugin = %name, binding = %binding.name, from = base, "shadow rebuild started");
        let handle = tokio::runtime::Handle::current();
        handle.spawn_blocking(move || job.run());
        Ok(lock(&state).clone())
    }

    /// The latest rebuild of a plugin in this server's life.
    pub fn rebuild(&self, plugin: &str) -> Option<RebuildView> {
        let name = PluginName::new(plugin).ok()?;
        let map = self
            .rebuilds
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(&name).map(|v| lock(v).clone())
    }
}

/// One rebuild under way.
struct Job {
    rt: Arc<Runtime>,
    plugin: PluginName,
    binding: BindingConfig,
    control: Arc<BindingControl>,
    /// The new version, on the shadow namespace.
    shadow: Plugin,
    bytes: Vec<u8>,
    /// The version serving when it started.
    base: u64,
    state: Arc<Mutex<RebuildView>>,
    /// The newest commit submitted (commits become durable in order).
    last: Option<CommitTicket>,
}

/// Starts the binding again when dropped.
struct Resume<'a>(&'a BindingControl);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

impl Job {
    fn run(mut self) {
        let started = Instant::now();
        let result = self.rebuild();
        let mut v = lock(&self.state);
        v.finished_ms = Some(now_ms());
        match result {
            Ok(version) => {
                v.phase = "done".to_owned();
                v.version = Some(version);
                tracing::info!(plugin = %self.plugin, version, handled = v.handled, failed = v.failed, secs = started.elapsed().as_secs_f64(), "shadow rebuild swapped in");
            }
            Err(e) => {
                v.phase = "failed".to_owned();
                v.error = Some(format!("{e}; version {} keeps serving", self.base));
                tracing::error!(plugin = %self.plugin, "shadow rebuild failed: {e}; version {} keeps serving", self.base);
            }
        }
        drop(v);
        if let Err(e) = shadow::clear(&*self.rt.storage, &self.plugin.shadow()) {
            tracing::warn!(plugin = %self.plugin, "cannot remove the shadow state ({e}); it goes at the next start");
        }
    }

    fn rebuild(&mut self) -> Result<u64, RebuildError> {
        let storage = Arc::clone(&self.rt.storage);
        let live = self.binding.name.clone();
        let mut pos = Offset(0);
        // 1. Catch up with the live binding.
        loop {
            if self.rt.is_closing() {
                return Err(RebuildError::ShuttingDown);
            }
            let bound = storage.cursor(&live);
            lock(&self.state).live_cursor = bound.0;
            if pos >= bound {
                break;
            }
            let want = ((bound.0 - pos.0) as usize).min(READ);
            let read = storage.read(&self.binding.source, pos, want)?;
            if read.is_empty() {
                break;
            }
            for stored in read.into_iter().take_while(|s| s.offset < bound) {
                pos = stored.offset.next();
                self.handle(&stored)?;
            }
            lock(&self.state).position = pos.0;
        }
        // 2. Stop the live binding; handle exactly what it acknowledged.
        lock(&self.state).phase = "swapping".to_owned();
        let paused_at = Instant::now();
        let control = Arc::clone(&self.control);
        tokio::runtime::Handle::current().block_on(control.pause());
        let resume = Resume(&control);
        let end = *storage.watch_end(&self.binding.source)?.borrow();
        while pos < end {
            let read = storage.read(&self.binding.source, pos, READ)?;
            if read.is_empty() {
                break;
            }
            for stored in read {
                pos = stored.offset.next();
                if storage.is_acked(&live, stored.offset) {
                    self.handle(&stored)?;
                }
            }
        }
        {
            let mut v = lock(&self.state);
            v.position = pos.0;
            v.live_cursor = storage.cursor(&live).0;
        }
        if let Some(t) = self.last.take() {
            t.wait()?;
        }
        // 3. Swap, and start the binding again on the new version.
        let deployed = self
            .rt
            .plugins
            .swap_rebuilt(&self.plugin, &self.bytes, self.base)?;
        drop(resume);
        lock(&self.state).paused_ms = Some(paused_at.elapsed().as_secs_f64() * 1e3);
        Ok(deployed.version.version)
    }

    /// Runs the new version on one record (retrying it as the binding would), committing its
    /// key-value writes to the shadow namespace.
    fn handle(&mut self, stored: &Stored) -> Result<(), RebuildError> {
        if super::replayed_for_another(&stored.record, &self.binding.name) {
            return Ok(());
        }
        let b = &self.binding;
        let mut attempt = 1;
        loop {
            let message = Message::new(
                &b.source,
                stored,
                Attempt::new(attempt).expect("attempts start at 1"),
            );
            let invocation = self.shadow.invoke_within(&message, b.timeout);
            let failure = match invocation.result {
                Ok(Outcome::Ack | Outcome::Reply(_)) => {
                    let effects = invocation.effects;
                    let mut v = lock(&self.state);
                    v.handled += 1;
                    v.publishes_dropped += effects.publishes.len() as u64;
                    drop(v);
                    if !effects.kv.is_empty() {
                        let ticket = self.rt.storage.submit(Commit {
                            kv: Some((self.plugin.shadow(), effects.kv.into_iter().collect())),
                            ..Commit::default()
                        })?;
                        self.last = Some(ticket);
                    }
                    drop(invocation.kv_guard);
                    return Ok(());
                }
                Ok(Outcome::DeadLetter(reason)) => (format!("dead-letter: {reason}"), false),
                Ok(Outcome::Retry(_)) => ("asked for a retry".to_owned(), true),
                Err(f) => (format!("{}: {}", f.class, f.message), f.retryable),
            };
            let (reason, retryable) = failure;
            if retryable && attempt < b.max_attempts && !self.rt.is_closing() {
                std::thread::sleep(b.backoff.delay(attempt, 0.5).min(MAX_RETRY_DELAY));
                attempt += 1;
                continue;
            }
            let mut v = lock(&self.state);
            v.failed += 1;
            if v.first_failure.is_none() {
                v.first_failure = Some(format!(
                    "offset {} (attempt {attempt}): {reason}",
                    stored.offset
                ));
            }
            return Ok(());
        }
    }
}
