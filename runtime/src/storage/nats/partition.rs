//! One partition of a binding, as run by the host that owns it: a reader that fetches the
//! partition's records in order into a bounded buffer (an ordered consumer from the cursor:
//! no JetStream acknowledgements, which cannot fence), the binding's progress in memory, and a
//! writer that makes every submitted commit durable as one compare-and-set of the partition's
//! commit record, then applies its outbox.
//!
//! The commit record (`weir_commits`, key `c.<binding>.<p>`) is the embedded journal's
//! encoding of: the cursor, the offsets acknowledged above it, the delivery counts of
//! unacknowledged offsets, and the outbox (the records the commits publish and the final
//! value of every key-value entry they wrote).
//!
//! **Invariant:** a commit is durable once its commit record is written with compare-and-set on
//! the revision this host last wrote or took over; a refused write means another host took the
//! partition (it bumped the revision when it did), so this host stops committing: its
//! commit and every later one fail with [`StorageError::Fenced`]. A record's outbox is applied
//! (outputs published under their deterministic ids, key-value writes with compare-and-set)
//! before the next record replaces it, and again by whoever takes the partition over.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::kv::UpdateErrorKind;
use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot, watch};

use super::kv::{KvApply, KvKey};
use super::{Inner, layout, streams};
use crate::names::{BindingName, DestinationName, Offset, PluginName};
use crate::storage::state::{self, Op};
use crate::storage::{Commit, CommitTicket, KvWrites, Record, StorageError, Stored};

/// Records the reader fetches ahead of what the delivery engine read, at most.
const PREFETCH: usize = 2048;

type Done = oneshot::Sender<Result<Vec<Offset>, StorageError>>;
/// Resolved when a commit record carrying the change is written.
pub(super) type Receipt = oneshot::Receiver<Result<Vec<Offset>, StorageError>>;

/// A submitted commit not yet written.
struct Pending {
    publishes: Vec<(DestinationName, Record)>,
    kv: Option<KvWrites>,
    done: Done,
}

#[derive(Default)]
struct Progress {
    /// Fetched and not yet handed to the engine.
    buffer: VecDeque<Stored>,
    /// Handed to the engine and not acknowledged.
    outstanding: BTreeSet<Offset>,
    /// Acknowledged above the cursor.
    acked: BTreeSet<Offset>,
    /// The offset after the last record handed to the engine.
    high: Offset,
    deliveries: BTreeMap<Offset, u32>,
    pending: Vec<Pending>,
    /// Set once fenced (or stopped): every later commit fails with it.
    failed: Option<StorageError>,
    /// Keys of commits refused by [`Partition::stop`], whose staged values the writer takes
    /// back from the mirror before it settles.
    unstage: Vec<(KvKey, u32)>,
}

impl Progress {
    fn cursor(&self) -> Offset {
        self.outstanding.first().copied().unwrap_or(self.high)
    }

    fn ack(&mut self, offset: Offset) {
        self.outstanding.remove(&offset);
        if offset >= self.cursor() {
            self.acked.insert(offset);
        }
        self.deliveries.remove(&offset);
        let cursor = self.cursor();
        while self.acked.first().is_some_and(|o| *o < cursor) {
            self.acked.pop_first();
        }
        while self
            .deliveries
            .first_key_value()
            .is_some_and(|(o, _)| *o < cursor)
        {
            self.deliveries.pop_first();
        }
    }
}

/// What a commit record holds, decoded.
#[derive(Debug, Default)]
pub(super) struct CommitRecord {
    pub cursor: Offset,
    pub acked: BTreeSet<Offset>,
    pub deliveries: BTreeMap<Offset, u32>,
    pub outbox: Vec<(DestinationName, Record)>,
    pub kv: Vec<(KvKey, Option<Vec<u8>>)>,
}

impl CommitRecord {
    pub fn decode(bytes: &[u8]) -> Result<CommitRecord, StorageError> {
        let mut rec = CommitRecord::default();
        for op in state::decode(bytes)
            .map_err(|e| StorageError::Corrupt(format!("commit record: {e}")))?
        {
            match op {
                Op::Cursor { offset, .. } => rec.cursor = offset,
                Op::Ack { offset, .. } => {
                    rec.acked.insert(offset);
                }
                Op::Delivered { offset, count, .. } => {
                    rec.deliveries.insert(offset, count);
                }
                Op::Outbox { log, record } => rec.outbox.push((log, record)),
                Op::KvSet { plugin, key, value } => rec.kv.push(((plugin, key), Some(value))),
                Op::KvDelete { plugin, key } => rec.kv.push(((plugin, key), None)),
                Op::Published { .. } => {}
            }
        }
        Ok(rec)
    }
}

/// One owned partition of a binding.
pub(super) struct Partition {
    /// `<binding>~p<n>`: the name the engine runs it under.
    pub name: BindingName,
    pub source: DestinationName,
    pub index: u32,
    key: String,
    progress: Mutex<Progress>,
    end: watch::Sender<Offset>,
    room: Notify,
    wake: Notify,
    stop: watch::Sender<bool>,
    /// Turns true once the writer exited and every write it staged in the key-value mirror
    /// was applied or taken back: nothing of this host's run of the partition can change the
    /// mirror any more.
    settled: watch::Sender<bool>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// Starts the reader and the writer of a partition taken over at `revision` with `rec`.
    pub fn start(
        inner: &Arc<Inner>,
        binding: &BindingName,
        source: &DestinationName,
        index: u32,
        rec: CommitRecord,
        revision: u64,
    ) -> Arc<Partition> {
        let part = Arc::new(Partition {
            name: binding.partition(index),
            source: source.clone(),
            index,
            key: layout::commit_key(binding, index),
            progress: Mutex::new(Progress {
                acked: rec.acked,
                high: rec.cursor,
                deliveries: rec.deliveries,
                ..Progress::default()
            }),
            end: watch::Sender::new(rec.cursor),
            room: Notify::new(),
            wake: Notify::new(),
            stop: watch::Sender::new(false),
            settled: watch::Sender::new(false),
        });
        let (i, p) = (Arc::clone(inner), Arc::clone(&part));
        inner
            .handle
            .spawn(async move { p.read_loop(i, rec.cursor).await });
        let (i, p) = (Arc::clone(inner), Arc::clone(&part));
        inner
            .handle
            .spawn(async move { p.write_loop(i, revision).await });
        part
    }

    /// Stops its tasks; commits submitted and not yet taken by the writer fail, and so do
    /// those submitted after this. The writer takes the key-value writes they staged back
    /// from the mirror, then settles ([`Partition::settled`]).
    pub fn stop(&self, why: StorageError) {
        let pending = {
            let mut p = self.progress.lock().expect("partition lock");
            p.failed.get_or_insert(why.clone());
            std::mem::take(&mut p.pending)
        };
        let mut unstage = Vec::new();
        for c in pending {
            if let Some((plugin, writes)) = c.kv {
                let keys: BTreeSet<String> = writes.into_iter().map(|(k, _)| k).collect();
                unstage.extend(keys.into_iter().map(|k| ((plugin.clone(), k), 1)));
            }
            let _ = c.done.send(Err(why.clone()));
        }
        self.progress
            .lock()
            .expect("partition lock")
            .unstage
            .extend(unstage);
        self.stop.send_replace(true);
    }

    /// Waits until the stopped partition's writer is done with the key-value mirror, for at
    /// most `patience`; whether it is.
    pub async fn settled(&self, patience: std::time::Duration) -> bool {
        let mut settled = self.settled.subscribe();
        tokio::time::timeout(patience, settled.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether it stopped: fenced by another host's take-over, or stopped by this one.
    pub fn stopped(&self) -> bool {
        self.progress
            .lock()
            .expect("partition lock")
            .failed
            .is_some()
    }

    /// Whether every submitted commit is written and applied.
    pub fn idle(&self) -> bool {
        self.progress
            .lock()
            .expect("partition lock")
            .pending
            .is_empty()
    }

    pub fn watch_end(&self) -> watch::Receiver<Offset> {
        self.end.subscribe()
    }

    pub fn cursor(&self) -> Offset {
        self.progress.lock().expect("partition lock").cursor()
    }

    pub fn is_acked(&self, offset: Offset) -> bool {
        let p = self.progress.lock().expect("partition lock");
        offset < p.cursor() || p.acked.contains(&offset)
    }

    /// Hands out fetched records from `from`; they count as outstanding until acknowledged.
    pub fn read(&self, from: Offset, max: usize) -> Vec<Stored> {
        let mut p = self.progress.lock().expect("partition lock");
        let at = p.buffer.partition_point(|s| s.offset < from);
        let out: Vec<Stored> = p.buffer.iter().skip(at).take(max).cloned().collect();
        if let Some(last) = out.last() {
            p.high = p.high.max(last.offset.next());
        }
        for s in &out {
            if !p.acked.contains(&s.offset) {
                p.outstanding.insert(s.offset);
            }
        }
        let high = p.high;
        while p.buffer.front().is_some_and(|s| s.offset < high) {
            p.buffer.pop_front();
        }
        drop(p);
        self.room.notify_one();
        out
    }

    /// Applies a commit to memory (its acknowledgements and key-value writes visible at once)
    /// and queues it for the writer.
    pub fn submit(&self, inner: &Inner, commit: Commit) -> Result<CommitTicket, StorageError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.progress.lock().expect("partition lock");
            if let Some(e) = &p.failed {
                return Err(e.clone());
            }
            for (_, offset) in &commit.acks {
                p.ack(*offset);
            }
            if let Some(kv) = &commit.kv {
                inner.kv.stage(kv);
            }
            p.pending.push(Pending {
                publishes: commit.publishes,
                kv: commit.kv,
                done: tx,
            });
        }
        self.wake.notify_one();
        Ok(CommitTicket::remote(rx))
    }

    /// Counts deliveries (the next commit record carries them) and waits until it is written.
    pub fn begin_deliveries(
        &self,
        offsets: &[Offset],
    ) -> Result<(Vec<u32>, Receipt), StorageError> {
        let (tx, rx) = oneshot::channel();
        let mut p = self.progress.lock().expect("partition lock");
        if let Some(e) = &p.failed {
            return Err(e.clone());
        }
        let counts = offsets
            .iter()
            .map(|o| {
                let c = p.deliveries.entry(*o).or_default();
                *c += 1;
                *c
            })
            .collect();
        p.pending.push(Pending {
            publishes: Vec::new(),
            kv: None,
            done: tx,
        });
        drop(p);
        self.wake.notify_one();
        Ok((counts, rx))
    }

    pub fn set_deliveries(&self, counts: &[(Offset, u32)]) {
        let mut p = self.progress.lock().expect("partition lock");
        for (o, c) in counts {
            if *c == 0 {
                p.deliveries.remove(o);
            } else {
                p.deliveries.insert(*o, *c);
            }
        }
    }

    async fn read_loop(self: Arc<Self>, inner: Arc<Inner>, from: Offset) {
        let mut stop = self.stop.subscribe();
        let mut next = from;
        let Ok(log) = inner.log(&self.source) else {
            return;
        };
        while !*stop.borrow() {
            let config = pull::OrderedConfig {
                filter_subject: layout::subject(&self.source, self.index),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: next.0 + 1,
                },
                ..Default::default()
            };
            let messages = match log.stream.create_consumer(config).await {
                Ok(c) => c.messages().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(partition = %self.name, "nats: cannot read: {e}; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            };
            loop {
                let m = tokio::select! {
                    m = messages.next() => m,
                    _ = stop.changed() => return,
                };
                let Some(Ok(m)) = m else { break };
                let Ok(info) = m.info() else { continue };
                let offset = Offset(info.stream_sequence - 1);
                if offset < next {
                    continue;
                }
                let record = match streams::decode(&m.payload) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(partition = %self.name, %offset, "nats: skipped: {e}");
                        next = offset.next();
                        continue;
                    }
                };
                loop {
                    let room =
                        self.progress.lock().expect("partition lock").buffer.len() < PREFETCH;
                    if room {
                        break;
                    }
                    tokio::select! {
                        _ = self.room.notified() => {}
                        _ = stop.changed() => return,
                    }
                }
                self.progress
                    .lock()
                    .expect("partition lock")
                    .buffer
                    .push_back(Stored {
                        offset,
                        record: Arc::new(record),
                    });
                next = offset.next();
                self.end.send_replace(next);
            }
        }
    }

    async fn write_loop(self: Arc<Self>, inner: Arc<Inner>, revision: u64) {
        self.write_until_stopped(&inner, revision).await;
        // Commits refused by `stop` staged writes that will never be applied: the mirror
        // goes back to what the bucket holds before anyone may run the partition here again.
        let unstage = std::mem::take(&mut self.progress.lock().expect("partition lock").unstage);
        if !unstage.is_empty() {
            inner.kv.unstage(unstage).await;
        }
        self.settled.send_replace(true);
    }

    async fn write_until_stopped(&self, inner: &Arc<Inner>, mut revision: u64) {
        let mut stop = self.stop.subscribe();
        loop {
            let (bytes, publishes, kv, done) = loop {
                if let Some(batch) = self.take() {
                    break batch;
                }
                if *stop.borrow_and_update() {
                    return;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.changed() => {}
                }
            };
            match self.write(inner, bytes, revision).await {
                Ok(r) => revision = r,
                Err(e) => {
                    for d in done {
                        let _ = d.send(Err(e.clone()));
                    }
                    // Never applied (or, stopped while unsure, applied again by whoever takes
                    // the partition over, from the record): the mirror goes back to what the
                    // bucket holds.
                    inner
                        .kv
                        .unstage(kv.into_iter().map(|(k, (_, n))| (k, n)).collect())
                        .await;
                    self.stop(e);
                    return;
                }
            }
            apply(inner, &publishes, kv, false).await;
            for d in done {
                let _ = d.send(Ok(Vec::new()));
            }
        }
    }

    /// Everything pending, as one commit record.
    #[allow(clippy::type_complexity)]
    fn take(&self) -> Option<(Vec<u8>, Vec<(DestinationName, Record)>, KvApply, Vec<Done>)> {
        let mut p = self.progress.lock().expect("partition lock");
        if p.pending.is_empty() {
            return None;
        }
        let pending = std::mem::take(&mut p.pending);
        let mut buf = Vec::new();
        state::encode_cursor(&mut buf, &self.name, p.cursor());
        for o in &p.acked {
            state::encode_ack(&mut buf, &self.name, *o);
        }
        for (o, c) in &p.deliveries {
            state::encode_delivered(&mut buf, &self.name, *o, *c);
        }
        drop(p);
        let mut publishes = Vec::new();
        let mut kv: BTreeMap<(PluginName, String), (Option<Vec<u8>>, u32)> = BTreeMap::new();
        let mut done = Vec::with_capacity(pending.len());
        for c in pending {
            publishes.extend(c.publishes);
            if let Some((plugin, writes)) = c.kv {
                let mut seen = std::collections::HashSet::new();
                for (key, value) in writes {
                    let e = kv.entry((plugin.clone(), key.clone())).or_insert((None, 0));
                    e.0 = value;
                    if seen.insert(key) {
                        e.1 += 1;
                    }
                }
            }
            done.push(c.done);
        }
        for (dest, record) in &publishes {
            state::encode_outbox(&mut buf, dest, record);
        }
        for ((plugin, key), (value, _)) in &kv {
            state::encode_kv(&mut buf, plugin, key, value.as_deref());
        }
        Some((buf, publishes, kv.into_iter().collect(), done))
    }

    /// Writes the commit record with compare-and-set on `revision`; an ambiguous answer is
    /// settled by reading the record back.
    async fn write(
        &self,
        inner: &Inner,
        bytes: Vec<u8>,
        revision: u64,
    ) -> Result<u64, StorageError> {
        let fenced = || StorageError::Fenced(self.name.clone());
        let mut wait = std::time::Duration::from_millis(20);
        loop {
            match inner
                .commits
                .update(&self.key, bytes.clone().into(), revision)
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => return Err(fenced()),
                Err(_) if *self.stop.borrow() => {
                    // Stopped while unsure whether the record was written: whoever takes the
                    // partition over reads the record and applies it if it was.
                    return Err(fenced());
                }
                Err(e) => {
                    tracing::warn!(partition = %self.name, "nats: commit record write failed: {e}; checking");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                    match inner.commits.entry(&self.key).await {
                        Ok(Some(entry)) if entry.revision != revision => {
                            return if entry.value.as_ref() == bytes.as_slice() {
                                Ok(entry.revision)
                            } else {
                                Err(fenced())
                            };
                        }
                        _ => continue,
                    }
                }
            }
        }
    }
}

/// Applies an outbox until it is applied: publishes (idempotent by id within the duplicate
/// window), then key-value writes.
pub(super) async fn apply(
    inner: &Arc<Inner>,
    publishes: &[(DestinationName, Record)],
    kv: KvApply,
    reapply: bool,
) {
    let mut wait = std::time::Duration::from_millis(20);
    while !publishes.is_empty() {
        match streams::publish_all(inner, publishes).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!("nats: publishing an outbox failed: {e}; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
    if !kv.is_empty() {
        inner.kv.apply(kv, reapply).await;
    }
}

/// The error a commit gets when its partition stopped without a reason.
pub(super) fn released(name: &BindingName) -> StorageError {
    StorageError::Fenced(name.clone())
}
