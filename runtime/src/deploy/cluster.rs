//! Plugin versions shared by several hosts (`[broker] kind = "nats"`): every version's
//! component is stored in the cluster by its SHA-256, and each plugin has one cluster record
//! naming its active version, written with compare-and-set on its revision. A deploy or a
//! rollback (by command or automatic) on any host writes the record; every host follows it.
//!
//! The record is the commit point of a deploy: a host stores the component, then writes the
//! record expecting the revision it last saw, then swaps the version in and records it on its
//! disk (which stays the cache: restarts and content-addressed reactivation work as on one
//! host). So:
//! - a component refused by the host it was sent to is never stored nor named: nothing
//!   changes anywhere;
//! - two hosts deploying at once: one write wins, the other is refused
//!   ([`DeployError::Conflict`], nothing swapped there) and that host follows the winner;
//! - a host killed after storing the component and before the record: an unnamed component
//!   stays in the cluster, nothing changes; killed after the record and before its own swap:
//!   the others follow the record, and it converges when it starts again;
//! - the component is stored (acknowledged by the cluster) before the record names it, so a
//!   host that sees the record finds the component.
//!
//! At start, a host follows the cluster's record (the cluster's active version wins over its
//! disk), except when its configured file changed since its last start: that is a deploy, as
//! on one host (a host's first start, with nothing stored, follows). With no record yet, it
//! writes its own active version with "must not exist", so hosts starting together agree on
//! the first.

use std::sync::atomic::Ordering::SeqCst;

use serde::{Deserialize, Serialize};

use super::{DeployError, Entry, Mode, Origin, Registry, Work};
use crate::names::PluginName;
use crate::storage::StorageError;

/// A plugin's active version as the cluster records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveVersion {
    /// SHA-256 of its component (the component is stored under it).
    pub sha256: String,
    /// Why it became active, when that was a rollback; `None` for a deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// Unique per write: an ambiguous answer to a write is settled by reading the record back.
    pub write_id: String,
}

impl ActiveVersion {
    fn new(sha256: &str, rollback: Option<&str>) -> ActiveVersion {
        ActiveVersion {
            sha256: sha256.to_owned(),
            rollback: rollback.map(str::to_owned),
            write_id: uuid::Uuid::now_v7().simple().to_string(),
        }
    }
}

/// Called by a [`SharedVersions`] watcher for every record written (its own hosts' too).
pub type OnChange = Box<dyn Fn(PluginName, ActiveVersion, u64) + Send + Sync>;

/// Where the plugin versions of several hosts are kept (see the module docs).
pub trait SharedVersions: Send + Sync + std::fmt::Debug {
    /// Stores a component under its SHA-256 (nothing to do when it is stored already);
    /// returns once the cluster acknowledged all of it.
    fn put_component(&self, sha256: &str, bytes: &[u8]) -> Result<(), StorageError>;

    /// A stored component, checked against its SHA-256; `None` when none is stored under it.
    fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// A plugin's record and its revision; `None` when no host wrote one yet.
    fn active(&self, plugin: &PluginName) -> Result<Option<(ActiveVersion, u64)>, StorageError>;

    /// Writes a plugin's record if its revision is still `expected` (0: no record yet).
    /// `Ok(Some(revision))` when written, `Ok(None)` when another write came first.
    fn set_active(
        &self,
        plugin: &PluginName,
        record: &ActiveVersion,
        expected: u64,
    ) -> Result<Option<u64>, StorageError>;

    /// Calls `on_change` with every plugin's record, then with every later write, until the
    /// store stops.
    fn watch(&self, on_change: OnChange);
}

impl Registry {
    /// Follows the cluster from now: each plugin takes the cluster's active version, or
    /// records its own when there is none or when its configured file changed since the last
    /// start (`changed_files`: a deploy, as on one host); then the watcher hands later records
    /// to the reloader.
    pub(super) fn join_cluster(&self, changed_files: &[PluginName]) -> anyhow::Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        for (name, entry) in &self.entries {
            let active = {
                let st = entry.lock();
                st.store.get(entry.slot.version()).map(|v| v.sha256.clone())
            };
            // A few turns: a write refused because another host's came first is tried again
            // over it; past them, the watcher delivers whatever won.
            for _ in 0..3 {
                let current = shared.active(name)?;
                if let Some((record, revision)) = &current
                    && (!changed_files.contains(name) || Some(&record.sha256) == active.as_ref())
                {
                    self.follow(name, record.clone(), *revision);
                    break;
                }
                let _changing = entry.changing();
                if let Some((_, revision)) = current {
                    entry.cluster_revision.store(revision, SeqCst);
                }
                match self.publish(name, entry, None) {
                    Ok(()) => break,
                    Err(DeployError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let tx = self.sender.clone();
        shared.watch(Box::new(move |plugin, record, revision| {
            let _ = tx.send(Work::Cluster {
                plugin,
                record,
                revision,
            });
        }));
        Ok(())
    }

    /// Stores the active version's component (or `sha256`'s bytes) and writes the plugin's record
    /// naming it, expecting the revision this host last saw. The caller holds `changing`.
    pub(super) fn publish_version(
        &self,
        name: &PluginName,
        entry: &Entry,
        sha256: &str,
        bytes: &[u8],
        rollback: Option<&str>,
    ) -> Result<(), DeployError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        shared.put_component(sha256, bytes)?;
        let expected = entry.cluster_revision.load(SeqCst);
        let record = ActiveVersion::new(sha256, rollback);
        match shared.set_active(name, &record, expected)? {
            Some(revision) => {
                entry.cluster_revision.store(revision, SeqCst);
                tracing::info!(plugin = %name, sha256, revision, "recorded the active version in the cluster");
                Ok(())
            }
            None => Err(DeployError::Conflict {
                plugin: name.to_string(),
                expected,
            }),
        }
    }

    /// [`Registry::publish_version`] of the version active on this host, or of `to` (a rollback).
    fn publish(
        &self,
        name: &PluginName,
        entry: &Entry,
        rollback: Option<(u64, &str)>,
    ) -> Result<(), DeployError> {
        let (sha256, bytes) = {
            let st = entry.lock();
            let seq = rollback.map_or_else(|| entry.slot.version(), |(to, _)| to);
            let Some(v) = st.store.get(seq) else {
                return Ok(());
            };
            (v.sha256.clone(), st.store.read_artifact(v)?)
        };
        self.publish_version(name, entry, &sha256, &bytes, rollback.map(|(_, r)| r))
    }

    /// Records an automatic rollback of this host in the cluster, so every host rolls back.
    pub(super) fn publish_rollback(&self, name: &PluginName, entry: &Entry, to: u64, reason: &str) {
        if self.shared.is_none() {
            return;
        }
        let _changing = entry.changing();
        if entry.slot.version() != to {
            return; // something else became active since
        }
        match self.publish(name, entry, Some((to, reason))) {
            Ok(()) => {}
            Err(DeployError::Conflict { .. }) => {
                tracing::warn!(plugin = %name, "another host changed the active version first; following it instead of recording the automatic rollback");
            }
            Err(e) => {
                tracing::error!(plugin = %name, "cannot record the automatic rollback in the cluster: {e}");
            }
        }
    }

    /// Makes the cluster's record of a plugin active here, when it is newer than what this host
    /// saw: from the disk cache when that content is stored here, otherwise fetched from the
    /// cluster. A version that cannot be fetched or loaded is logged; the active one stays.
    pub(super) fn follow(&self, plugin: &PluginName, record: ActiveVersion, revision: u64) {
        let Some((name, entry)) = self.entries.get_key_value(plugin) else {
            return;
        };
        let _changing = entry.changing();
        if revision <= entry.cluster_revision.load(SeqCst) {
            return; // this host's own write, or one it followed already
        }
        entry.cluster_revision.store(revision, SeqCst);
        let (active, local) = {
            let st = entry.lock();
            let active = st.store.get(entry.slot.version()).map(|v| v.sha256.clone());
            let local = st.store.by_hash(&record.sha256).cloned();
            (active, local)
        };
        if active.as_deref() == Some(record.sha256.as_str()) {
            return;
        }
        tracing::info!(plugin = %name, sha256 = %record.sha256, revision, rollback = record.rollback.is_some(), "following the cluster's active version");
        let outcome = match (&record.rollback, &local) {
            (Some(reason), Some(v)) => {
                let from = entry.slot.version();
                self.roll_back_to(name, entry, from, v.seq, reason, false)
                    .map(drop)
            }
            _ => self.fetch(entry, &record.sha256).and_then(|bytes| {
                self.deploy_inner(
                    name,
                    entry,
                    &bytes,
                    &record.sha256,
                    Origin::Upload,
                    Mode::Following,
                )
                .map(drop)
            }),
        };
        if let Err(e) = outcome {
            tracing::error!(plugin = %name, sha256 = %record.sha256, "cannot activate the cluster's version: {e}");
        }
    }

    /// A version's component: from this host's disk when stored here, else from the cluster.
    fn fetch(&self, entry: &Entry, sha256: &str) -> Result<Vec<u8>, DeployError> {
        {
            let st = entry.lock();
            if let Some(bytes) = st
                .store
                .by_hash(sha256)
                .and_then(|v| st.store.read_artifact(v).ok())
            {
                return Ok(bytes);
            }
        }
        let stored = match &self.shared {
            Some(shared) => shared.component(sha256)?,
            None => None,
        };
        match stored {
            Some(bytes) => Ok(bytes),
            None => Err(DeployError::Storage(StorageError::Remote(format!(
                "the cluster has no component with SHA-256 {sha256}"
            )))),
        }
    }
}
