//! Which host runs which binding partition. Every host heartbeats in `weir_hosts` and claims
//! partitions with leases in `weir_leases` (a key per partition, created with compare-and-set,
//! renewed every third of the lease, gone after `lease` without renewal: both buckets expire
//! entries by age). A host takes up to its fair share, `ceil(partitions / live hosts)`, and
//! gives back what is above it, so a new host gets work and a dead host's partitions go to
//! the others once its leases expire.
//!
//! **Invariant:** a lease says who should run a partition; it is never what keeps two hosts
//! from both committing. That is the commit record's compare-and-set: taking a partition over
//! first rewrites its record (bumping the revision), which refuses every later write of the
//! previous owner, even one that was paused past its lease and does not know it lost it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::partition::{CommitRecord, Partition, apply};
use super::{Inner, layout, remote};
use crate::names::{BindingName, DestinationName};
use crate::storage::StorageError;

/// A binding partition: the binding's name and the partition.
pub type PartitionId = (BindingName, u32);

#[derive(Debug, Default)]
pub(super) struct Ownership {
    /// Partitions whose engines should run on this host.
    pub active: watch::Sender<BTreeSet<PartitionId>>,
    /// Leases held, with their revisions.
    held: Mutex<BTreeMap<PartitionId, u64>>,
    /// Leases being given back: the engine is stopping.
    releasing: Mutex<BTreeSet<PartitionId>>,
}

impl Ownership {
    /// Runs until the storage is dropped: heartbeats, renews, claims and gives back.
    pub async fn run(
        self: Arc<Self>,
        inner: Arc<Inner>,
        bindings: Vec<(BindingName, DestinationName)>,
    ) {
        let every = inner.cfg.lease / 3;
        let all: Vec<(PartitionId, DestinationName)> = bindings
            .iter()
            .flat_map(|(b, d)| (0..inner.cfg.partitions).map(move |p| ((b.clone(), p), d.clone())))
            .collect();
        // Heartbeats and renewals on their own, so that a slow take-over (a cluster electing
        // leaders after losing a node answers with time-outs) never lets a held lease lapse.
        let (me, i) = (Arc::clone(&self), Arc::clone(&inner));
        let renewing = tokio::spawn(async move {
            loop {
                if let Err(e) = me.renew(&i).await {
                    tracing::warn!("nats: partition leases: {e}");
                }
                tokio::time::sleep(every).await;
            }
        });
        let _stop_renewing = AbortOnDrop(renewing);
        loop {
            if let Err(e) = self.tick(&inner, &all).await {
                tracing::warn!("nats: partition ownership: {e}");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Heartbeats this host and renews its leases; a lease that cannot be renewed is lost.
    async fn renew(&self, inner: &Arc<Inner>) -> Result<(), StorageError> {
        inner
            .hosts
            .put(&inner.host_id, Vec::new().into())
            .await
            .map_err(remote)?;
        let held: Vec<(PartitionId, u64)> = self
            .held
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (id, rev) in held {
            let key = layout::lease_key(&id.0, id.1);
            if self.fenced(inner, &id) {
                // Another host rewrote its commit record (it took the partition over while
                // this host could not renew, or this host's own stale take-over fenced the
                // owner): the partition is dead here, so give it back like a rebalance does
                // (the engine stops, then `release` lets the lease go), so that a host takes
                // it over again instead of it staying with an engine that can only fail.
                tracing::warn!(binding = %id.0, partition = id.1, "fenced on a partition: another host wrote its commit record; giving it back");
                self.releasing.lock().expect("lock").insert(id.clone());
                self.active.send_modify(|a| {
                    a.remove(&id);
                });
                continue;
            }
            match inner
                .leases
                .update(&key, inner.host_id.clone().into(), rev)
                .await
            {
                Ok(r) => {
                    let mut held = self.held.lock().expect("lock");
                    if let Some(r0) = held.get_mut(&id) {
                        *r0 = r;
                    }
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(binding = %id.0, partition = id.1, "lost the lease on a partition; stopping it");
                    self.held.lock().expect("lock").remove(&id);
                    self.active.send_modify(|a| {
                        a.remove(&id);
                    });
                    inner.stop_partition(&id, StorageError::Fenced(id.0.partition(id.1)));
                }
                Err(e) => return Err(remote(e)),
            }
        }
        Ok(())
    }

    /// Whether this host's engine of a held partition was fenced (its writer stopped it), as
    /// opposed to stopping for a give-back.
    fn fenced(&self, inner: &Inner, id: &PartitionId) -> bool {
        if self.releasing.lock().expect("lock").contains(id) {
            return false;
        }
        inner
            .part(&id.0.partition(id.1))
            .is_some_and(|p| p.stopped())
    }

    async fn tick(
        &self,
        inner: &Arc<Inner>,
        all: &[(PartitionId, DestinationName)],
    ) -> Result<(), StorageError> {
        let hosts = count(inner.hosts.keys().await.map_err(remote)?)
            .await
            .max(1);
        let share = all.len().div_ceil(hosts);
        let held_n = self.held.lock().expect("lock").len();
        if held_n > share {
            let mut releasing = self.releasing.lock().expect("lock");
            if releasing.is_empty() {
                let active = self.active.borrow().clone();
                if let Some(id) = active.iter().next_back().cloned() {
                    tracing::info!(binding = %id.0, partition = id.1, hosts, share, "giving a partition back to balance the hosts");
                    releasing.insert(id.clone());
                    self.active.send_modify(|a| {
                        a.remove(&id);
                    });
                }
            }
            return Ok(());
        }
        if held_n == share {
            return Ok(());
        }
        let taken: BTreeSet<String> = {
            let mut keys = inner.leases.keys().await.map_err(remote)?;
            let mut out = BTreeSet::new();
            while let Some(k) = keys.next().await {
                out.insert(k.map_err(remote)?);
            }
            out
        };
        // Start looking at a place of this host's own, so that hosts starting together do
        // not all race for the same partitions.
        let start = inner.host_id.bytes().map(usize::from).sum::<usize>() % all.len().max(1);
        let mut want = share - held_n;
        for i in 0..all.len() {
            if want == 0 {
                break;
            }
            let (id, source) = &all[(start + i) % all.len()];
            let key = layout::lease_key(&id.0, id.1);
            if taken.contains(&key) || self.held.lock().expect("lock").contains_key(id) {
                continue;
            }
            let Ok(rev) = inner
                .leases
                .create(&key, inner.host_id.clone().into())
                .await
            else {
                continue;
            };
            self.held.lock().expect("lock").insert(id.clone(), rev);
            match take_over(inner, &id.0, source, id.1).await {
                Ok(part) => {
                    inner
                        .parts
                        .lock()
                        .expect("lock")
                        .insert(part.name.clone(), part);
                    self.active.send_modify(|a| {
                        a.insert(id.clone());
                    });
                    tracing::info!(binding = %id.0, partition = id.1, "took a partition over");
                    want -= 1;
                }
                Err(e) => {
                    tracing::warn!(binding = %id.0, partition = id.1, "cannot take a partition over: {e}");
                    self.held.lock().expect("lock").remove(id);
                    let _ = inner.leases.delete_expect_revision(&key, Some(rev)).await;
                }
            }
        }
        Ok(())
    }

    /// Called once the engine of a partition that left `active` stopped: waits for its
    /// commits, stops it and gives its lease back (if still held).
    pub async fn release(&self, inner: &Arc<Inner>, id: &PartitionId) {
        let name = id.0.partition(id.1);
        let part = inner.parts.lock().expect("lock").get(&name).cloned();
        if let Some(part) = part {
            let deadline = tokio::time::Instant::now() + inner.cfg.lease;
            while !part.idle() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            inner.retire(&name, super::partition::released(&name));
        }
        let rev = self.held.lock().expect("lock").remove(id);
        if let Some(rev) = rev {
            let key = layout::lease_key(&id.0, id.1);
            if let Err(e) = inner.leases.delete_expect_revision(&key, Some(rev)).await {
                tracing::warn!(binding = %id.0, partition = id.1, "cannot give the lease back (it expires): {e}");
            }
        }
        self.releasing.lock().expect("lock").remove(id);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn count(mut keys: async_nats::jetstream::kv::Keys) -> usize {
    let mut n = 0;
    while let Some(k) = keys.next().await {
        n += usize::from(k.is_ok());
    }
    n
}

/// Takes a partition over: fences the previous owner by rewriting the commit record (a new
/// revision), re-applies its outbox against a caught-up key-value mirror, then starts reading
/// from its cursor.
async fn take_over(
    inner: &Arc<Inner>,
    binding: &BindingName,
    source: &DestinationName,
    p: u32,
) -> Result<Arc<Partition>, StorageError> {
    // This host ran the partition before: its old writer may still hold staged key-value
    // writes (of commits that were refused) in the mirror, which the new run would read.
    let old = inner
        .retired
        .lock()
        .expect("lock")
        .remove(&binding.partition(p));
    if let Some(old) = old
        && !old.settled(inner.cfg.lease).await
    {
        inner
            .retired
            .lock()
            .expect("lock")
            .insert(binding.partition(p), old);
        return Err(StorageError::Remote(
            "this host's previous run of the partition has not settled yet".into(),
        ));
    }
    let key = layout::commit_key(binding, p);
    let (bytes, revision) = loop {
        let entry = inner.commits.entry(&key).await.map_err(remote)?;
        let (bytes, rev) = match entry {
            Some(e) if e.operation == Operation::Put => (e.value.to_vec(), e.revision),
            Some(e) => (Vec::new(), e.revision),
            None => (Vec::new(), 0),
        };
        match inner.commits.update(&key, bytes.clone().into(), rev).await {
            Ok(r) => break (bytes, r),
            // The previous owner committed meanwhile: read again.
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(remote(e)),
        }
    };
    let rec = CommitRecord::decode(&bytes)?;
    inner.kv.caught_up().await?;
    let kv = rec
        .kv
        .iter()
        .map(|(k, v)| (k.clone(), (v.clone(), 0)))
        .collect();
    apply(inner, &rec.outbox, kv, true).await;
    let outbox = rec.outbox.len();
    let cursor = rec.cursor;
    let part = Partition::start(inner, binding, source, p, rec, revision);
    tracing::debug!(partition = %part.name, %cursor, outbox, "re-applied the last commit record");
    Ok(part)
}
