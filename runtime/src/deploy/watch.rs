//! The reloader: one thread that deploys plugin files when they change (watched with `notify`),
//! records the automatic rollbacks slots make, and (with several hosts) activates the versions
//! the cluster records.
//!
//! A file is taken when it is complete. Writers finish in one of three ways, and each is a
//! signal to take the file at once: closing a file written in place or truncated and rewritten
//! (inotify's close-after-write), or renaming a finished file into place. Other changes (data
//! written, the file created or removed) only start a quiet period (`server.reload_quiet`,
//! 300 ms by default); when it passes without further events the file is taken too (for
//! writers whose close is not seen). A file that does not load when its writer seems done is
//! refused only after a quiet period, so a writer that closes and reopens does not produce a
//! refusal; a content already taken (loaded or refused) is never taken again, so one write is
//! one reload.
//!
//! A deploy from a file change is written to the plugin's version manifest once changes stop
//! for a quiet period (and when the reloader stops), not on every swap: a crash before that
//! loses nothing, since the restart finds the file's content not yet taken and takes it.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

use super::{DeployError, Registry, Work};
use crate::names::PluginName;

/// The running reloader; stops (and joins its thread) when dropped.
pub struct Reloader {
    thread: Option<JoinHandle<()>>,
    stop: mpsc::Sender<Work>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// Starts watching the files of the plugins with `watch = true`, and the thread.
    pub fn start(registry: Arc<Registry>) -> anyhow::Result<Reloader> {
        let events = registry
            .take_events()
            .context("the reloader of this registry was already started")?;
        let mut files: HashMap<PathBuf, Vec<PluginName>> = HashMap::new();
        let mut dirs = BTreeSet::new();
        for (name, e) in &registry.entries {
            if !e.config.watch {
                continue;
            }
            let path = &e.config.path;
            let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let dir = dir
                .canonicalize()
                .with_context(|| format!("plugin `{name}`: cannot watch {}", dir.display()))?;
            files.entry(dir.join(file)).or_default().push(name.clone());
            dirs.insert(dir);
        }
        let watcher = if files.is_empty() {
            None
        } else {
            let tx = registry.sender.clone();
            let mut w = notify::recommended_watcher(move |event| {
                let _ = tx.send(Work::Fs(event));
            })
            .context("cannot watch plugin files")?;
            for d in &dirs {
                w.watch(d, RecursiveMode::NonRecursive)
                    .with_context(|| format!("cannot watch {}", d.display()))?;
            }
            tracing::info!(files = files.len(), "watching plugin files for changes");
            Some(w)
        };
        let stop = registry.sender.clone();
        let thread = std::thread::Builder::new()
            .name("weir-reload".into())
            .spawn(move || run(&registry, &events, &files))
            .context("cannot start the reloader thread")?;
        Ok(Reloader {
            thread: Some(thread),
            stop,
            _watcher: watcher,
        })
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let _ = self.stop.send(Work::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    registry: &Registry,
    events: &mpsc::Receiver<Work>,
    files: &HashMap<PathBuf, Vec<PluginName>>,
) {
    // Plugins whose file changed without a completion signal yet, by deadline.
    let mut pending: HashMap<PluginName, Instant> = HashMap::new();
    // When to write the manifests of file-driven deploys: once they stop for a quiet period.
    let mut flush_at: Option<Instant> = None;
    loop {
        // Deadlines first, on every turn: a steady stream of other events (another plugin's
        // file rewritten often, rollbacks) must not postpone a due take or the manifest flush.
        let now = Instant::now();
        if flush_at.is_some_and(|at| at <= now) {
            flush_at = None;
            registry.flush();
        }
        let due: Vec<PluginName> = pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for plugin in due {
            pending.remove(&plugin);
            set_pending(registry, &plugin, false);
            take(registry, &plugin, true);
            flush_at = Some(Instant::now() + registry.quiet);
        }
        let next = pending.values().copied().chain(flush_at).min();
        let work = match next {
            Some(at) => events.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match work {
            Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => {
                registry.flush();
                return;
            }
            // Handled at the top of the loop.
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Work::RolledBack {
                plugin,
                from,
                to,
                reason,
            }) => registry.rolled_back(&plugin, from, to, &reason),
            Ok(Work::Cluster {
                plugin,
                record,
                revision,
            }) => registry.follow(&plugin, record, revision),
            Ok(Work::Fs(Err(e))) => tracing::warn!("watching plugin files: {e}"),
            Ok(Work::Fs(Ok(event))) => {
                tracing::trace!(?event, "plugin directory event");
                let complete = matches!(
                    event.kind,
                    EventKind::Access(AccessKind::Close(AccessMode::Write))
                        | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                );
                // Opening or reading (our own reads too) changes nothing.
                let ignored = matches!(event.kind, EventKind::Access(_)) && !complete;
                if ignored {
                    continue;
                }
                let plugins = event.paths.iter().filter_map(|p| files.get(p)).flatten();
                for plugin in plugins {
                    if complete && take(registry, plugin, false) {
                        pending.remove(plugin);
                        set_pending(registry, plugin, false);
                        flush_at = Some(Instant::now() + registry.quiet);
                    } else {
                        pending.insert(plugin.clone(), Instant::now() + registry.quiet);
                        set_pending(registry, plugin, true);
                    }
                }
            }
        }
    }
}

/// Takes a plugin's file if its content is new. Returns false when it did not load and was not
/// refused yet (not `final_attempt`): the caller waits for a quiet period and tries again.
fn take(registry: &Registry, plugin: &PluginName, final_attempt: bool) -> bool {
    match registry.deploy_file(plugin, final_attempt) {
        Ok(_) => true,
        Err(DeployError::Refused(..)) if !final_attempt => false,
        Err(DeployError::Refused(..)) => true, // logged and listed by the registry
        Err(e) => {
            tracing::error!(plugin = %plugin, "deploying the changed file failed: {e}");
            true
        }
    }
}

fn set_pending(registry: &Registry, plugin: &PluginName, pending: bool) {
    if let Some(e) = registry.entries.get(plugin) {
        e.pending.store(pending, Relaxed);
    }
}
