//! The publishers: async tasks or threads that publish the events one at a time, each waiting
//! for its durable acknowledgement, as fast as they can or each at its due time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::bail;

use super::probe::Probe;
use super::{E2eArgs, PublishMode};
use crate::names::{DestinationName, Offset};
use crate::storage::log::Log;
use crate::storage::{EmbeddedStorage, Record, Storage};

/// Publishes the events, each one record with a fresh id (as an HTTP publish without `weir-id`
/// gets), appended with dedup like every external publish.
pub(super) struct Publishers {
    pub(super) log: Arc<Log>,
    pub(super) storage: Arc<EmbeddedStorage>,
    pub(super) source: DestinationName,
    pub(super) probe: Arc<Probe>,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) events: u64,
    pub(super) failed: AtomicBool,
    pub(super) next: AtomicU64,
}

impl Publishers {
    /// Publishes every event; returns when all are acknowledged.
    pub(super) fn run(
        self: &Arc<Self>,
        tokio: &tokio::runtime::Runtime,
        args: &E2eArgs,
    ) -> anyhow::Result<()> {
        match (args.publish, args.rate) {
            (PublishMode::Blocking, rate) => std::thread::scope(|s| {
                let threads: Vec<_> = (0..args.publishers)
                    .map(|_| s.spawn(|| self.blocking(rate)))
                    .collect();
                let results: Vec<_> = threads
                    .into_iter()
                    .map(|t| t.join().expect("publisher thread"))
                    .collect();
                results.into_iter().collect()
            }),
            (PublishMode::Async, None) => tokio.block_on(async {
                let tasks: Vec<_> = (0..args.publishers)
                    .map(|_| {
                        let me = Arc::clone(self);
                        tokio::spawn(async move {
                            while me.take().is_some() {
                                me.publish_async().await?;
                            }
                            Ok::<_, anyhow::Error>(())
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await??;
                }
                Ok(())
            }),
            (PublishMode::Async, Some(rate)) => {
                // One pacing thread starts each publish at its due time, however many wait.
                let mut tasks = Vec::with_capacity(self.events as usize);
                while let Some(i) = self.take() {
                    self.wait_due(i, rate);
                    let me = Arc::clone(self);
                    tasks.push(tokio.spawn(async move { me.publish_async().await }));
                }
                tokio.block_on(async {
                    for t in tasks {
                        t.await??;
                    }
                    Ok(())
                })
            }
        }
    }

    /// The next event to publish, if any is left and nothing failed.
    pub(super) fn take(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Relaxed);
        (i < self.events && !self.failed.load(Relaxed)).then_some(i)
    }

    /// Sleeps until event `i` is due at `rate` events per second.
    pub(super) fn wait_due(&self, i: u64, rate: u64) {
        let due = (u128::from(i) * 1_000_000_000 / u128::from(rate)) as u64;
        let now = self.probe.now();
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
    }

    pub(super) fn record(&self) -> Record {
        Record {
            id: crate::ids::new_message_id(),
            key: None,
            headers: self.headers.clone(),
            payload: self.payload.clone(),
            timestamp_ms: crate::ids::now_ms(),
            reply_to: None,
            correlation_id: None,
        }
    }

    /// One publisher thread: `Storage::append`, which blocks until the record is durable. (A
    /// publish without a client id gets a fresh id, so `Runtime::publish` appends it without a
    /// dedup lookup; the benchmark does the same.)
    pub(super) fn blocking(&self, rate: Option<u64>) -> anyhow::Result<()> {
        while let Some(i) = self.take() {
            if let Some(rate) = rate {
                self.wait_due(i, rate);
            }
            let start = self.probe.now();
            let stored = self.storage.append(&self.source, vec![self.record()]);
            let stored = stored.inspect_err(|_| self.failed.store(true, Relaxed))?;
            self.published(stored[0], start)?;
        }
        Ok(())
    }

    /// One publish awaited: the same append, its durable acknowledgement awaited.
    pub(super) async fn publish_async(&self) -> anyhow::Result<()> {
        let start = self.probe.now();
        let record = self.record();
        let stored = self.log.append(std::slice::from_ref(&record)).await;
        let stored = stored.inspect_err(|_| self.failed.store(true, Relaxed))?;
        self.published(stored.first, start)
    }

    pub(super) fn published(&self, offset: Offset, start: u64) -> anyhow::Result<()> {
        let acked = self.probe.now();
        let Some(o) = self.probe.index(offset) else {
            bail!(
                "offset {offset} is outside the {} events published after offset {}",
                self.events,
                self.probe.base
            );
        };
        self.probe.publish_start[o].store(start, Relaxed);
        self.probe.publish_acked[o].store(acked, Relaxed);
        Ok(())
    }
}
