//! Bindings on a shared JetStream store: each binding runs per partition, and only the
//! partitions this host holds (the store's ownership decides; see `storage/nats`). This task
//! starts an engine for each partition the host gains and stops the engine of each it loses
//! or gives back, then tells the store, which waits for its commits and lets the lease go.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::Runtime;
use crate::storage::{NatsStorage, PartitionId, Storage, StorageError};

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), StorageError>>,
}

/// Runs the binding partitions this host holds until `stop` turns true.
pub(super) async fn run_partitions(
    runtime: Arc<Runtime>,
    nats: Arc<NatsStorage>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StorageError> {
    let bindings = runtime
        .config
        .bindings
        .iter()
        .map(|b| (b.name.clone(), b.source.clone()))
        .collect();
    let mut active = nats.own(bindings);
    let mut running: BTreeMap<PartitionId, Running> = BTreeMap::new();
    loop {
        let want = active.borrow_and_update().clone();
        let gone: Vec<PartitionId> = running
            .keys()
            .filter(|id| !want.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            let r = running.remove(&id).expect("listed");
            r.stop.send_replace(true);
            let _ = r.task.await;
            nats.release(id.clone()).await;
            tracing::info!(binding = %id.0, partition = id.1, "stopped a partition this host no longer holds");
        }
        let new: Vec<PartitionId> = want
            .iter()
            .filter(|id| !running.contains_key(*id))
            .cloned()
            .collect();
        for id in new {
            let Some(b) = runtime.config.bindings.iter().find(|b| b.name == id.0) else {
                continue;
            };
            let mut config = b.clone();
            config.name = b.name.partition(id.1);
            config.source = b.source.partition(id.1);
            let plugin = Arc::clone(
                runtime
                    .plugins
                    .slot(&b.plugin)
                    .expect("bindings name configured plugins"),
            );
            let (tx, rx) = watch::channel(false);
            let storage: Arc<dyn Storage> = Arc::clone(&runtime.storage);
            let fut = super::rebuild::supervise(
                config,
                plugin,
                storage,
                Arc::clone(&runtime.bindings[&b.name]),
                Arc::clone(&runtime.parking[&b.name]),
                Arc::default(),
                rx,
            );
            running.insert(
                id,
                Running {
                    stop: tx,
                    task: tokio::spawn(fut),
                },
            );
        }
        tokio::select! {
            changed = active.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (id, r) in std::mem::take(&mut running) {
        r.stop.send_replace(true);
        let _ = r.task.await;
        nats.release(id).await;
    }
    Ok(())
}
