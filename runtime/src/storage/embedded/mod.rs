//! The embedded store: every queue and topic is a durable [`Log`] in `<dir>/logs/<name>/`, and
//! binding cursors and plugin key-value state live in a state journal (`<dir>/state/journal/`,
//! itself a `Log`) with periodic snapshots (`<dir>/state/snapshot`).
//!
//! A [`Commit`] with key-value writes or acknowledgements is one journal record, and its
//! published records go in that record too (`Outbox` operations: the transactional outbox). The
//! outbox thread appends them to their logs only once the journal record is durable, in journal
//! order; the commit is durable when its journal record and those appends are. So a published
//! record is never durable without the key-value writes and acknowledgement of the invocation
//! that made it: a crash either loses the whole commit (the message is delivered again and
//! publishes afresh) or keeps the journal record, and then recovery appends whatever of its
//! outbox the crash cut off. Per log, the outbox records a crash kept are a prefix of those the
//! outbox thread appended (it appends in journal order, and a log keeps a prefix of its
//! appends), so recovery finds, from the newest backwards, the last one stored (by its id) and
//! appends those after it. A commit of publishes alone (external publishes, stream appends)
//! needs no journal record and appends at once.
//!
//! Journals written before the outbox carry `Published` operations instead (where a commit's
//! publishes, appended in parallel with the journal record, end in each log): recovery still
//! checks them, and from the first record whose publishes are missing on it discards every
//! record carrying effects, keeping facts about deliveries (counts, at-most-once
//! acknowledgements); a snapshot written right then makes the decision final.
//!
//! **Invariant:** journal records are applied to the in-memory state in journal order (append
//! and apply happen under one lock), so a state read never reflects a change that a crash could
//! undo while keeping a later one. A snapshot only covers records whose outbox records are
//! durable in their logs.

mod snapshot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, mpsc};

use tokio::sync::watch;

use super::log::{Durability, Io, Log, LogError, LogOptions, Recovery, RecoveryReport, StdIo};
use super::outbox::{Landed, Slot};
use super::state::{self, Op, State};
use super::{Commit, CommitTicket, Reclaimed, Record, Storage, StorageError, Stored};
use crate::config::Retention;
use crate::names::{BindingName, DestinationName, Offset, PluginName};

/// Bytes read per storage read call at most (at least one record is always returned).
const READ_BYTES: usize = 4 << 20;

/// How the embedded store is opened.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// When appends are acknowledged relative to fsync. Default: [`Durability::Always`].
    pub durability: Durability,
    /// What to do with damage found on open. Default: [`Recovery::Strict`].
    pub recovery: Recovery,
    /// Segment size of queue and topic logs. Default: 256 MiB.
    pub segment_bytes: u64,
    /// Journal size after which the state is snapshotted and the journal trimmed. Default: 64 MiB.
    pub snapshot_bytes: u64,
    /// The file system (a fault-injecting one in tests). Default: the real one.
    pub io: Arc<dyn Io>,
    /// Fault injection for crash tests: the outbox thread stops for good once the journal
    /// record of this many commits with publishes is durable, before appending that commit's
    /// publishes (it prints `weir: outbox stalled` to stderr; the commits then fail). Default:
    /// `WEIR_FAULT_OUTBOX_STALL` from the environment, else never.
    pub outbox_stall_after: Option<u64>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            durability: Durability::Always,
            recovery: Recovery::Strict,
            segment_bytes: 256 << 20,
            snapshot_bytes: 64 << 20,
            io: Arc::new(StdIo),
            outbox_stall_after: std::env::var(STALL_ENV).ok().and_then(|v| v.parse().ok()),
        }
    }
}

impl EmbeddedOptions {
    fn log_options(&self, segment_bytes: u64) -> LogOptions {
        LogOptions::new()
            .durability(self.durability)
            .recovery(self.recovery)
            .segment_bytes(segment_bytes)
            .io(Arc::clone(&self.io))
    }
}

/// The durable embedded store.
#[derive(Debug)]
pub struct EmbeddedStorage {
    dir: PathBuf,
    options: EmbeddedOptions,
    logs: RwLock<HashMap<DestinationName, Arc<Log>>>,
    journal: Arc<Log>,
    state: Mutex<Applied>,
    snapshotting: AtomicBool,
    /// A thread panicked holding the state: memory may be out of step with the journal, so
    /// the store takes no more writes (fail-stop).
    poisoned: AtomicBool,
    /// Commits whose publishes wait for their journal record, in journal order (sent under the
    /// state lock); `None` once the store is dropped.
    outbox: Mutex<Option<mpsc::Sender<OutboxItem>>>,
    outbox_thread: Option<std::thread::JoinHandle<()>>,
    outbox_progress: Arc<OutboxProgress>,
    /// Held for the store's lifetime: one process per store directory.
    _lock: std::fs::File,
}

/// One commit's publishes, waiting for its journal record to be durable.
struct OutboxItem {
    /// The journal offset after the commit's record.
    journal_end: Offset,
    groups: Vec<Group>,
    total: usize,
    slot: Arc<Slot>,
}

/// How far the outbox thread has got: every commit whose journal record ends at or before
/// `journal` has its publishes appended, and they end at `ends` in their logs; `sent` is the
/// journal end of the last commit handed to it.
#[derive(Debug, Default)]
struct OutboxProgress {
    state: Mutex<OutboxState>,
    moved: Condvar,
}

#[derive(Debug, Default)]
struct OutboxState {
    sent: Offset,
    journal: Offset,
    ends: HashMap<DestinationName, Offset>,
    /// The thread stopped (the journal or a log failed): no snapshot may be taken any more.
    failed: bool,
}

impl OutboxProgress {
    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// See [`EmbeddedOptions::outbox_stall_after`].
const STALL_ENV: &str = "WEIR_FAULT_OUTBOX_STALL";

/// Commits the outbox thread takes at once at most.
const OUTBOX_BATCH: usize = 1024;

/// The outbox thread: appends each commit's publishes once its journal record is durable. It
/// takes every commit waiting (up to [`OUTBOX_BATCH`]) and appends their records to each log
/// in one call, in journal order.
fn run_outbox(
    journal: Arc<Log>,
    items: mpsc::Receiver<OutboxItem>,
    progress: Arc<OutboxProgress>,
    stall_after: Option<u64>,
) {
    let mut seen = 0u64;
    while let Ok(first) = items.recv() {
        let mut batch = vec![first];
        while batch.len() < OUTBOX_BATCH {
            match items.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        if let Some(n) = stall_after
            && seen < n
            && seen + batch.len() as u64 >= n
        {
            let stalled = batch.split_off((n - seen - 1) as usize);
            if !batch.is_empty() {
                append_outbox(&journal, batch, &progress);
            }
            stall(&journal, stalled, &items, &progress);
            return;
        }
        seen += batch.len() as u64;
        append_outbox(&journal, batch, &progress);
    }
}

/// The fault injection of [`EmbeddedOptions::outbox_stall_after`]: `stalled[0]`'s journal
/// record is made durable and then nothing more is appended.
fn stall(
    journal: &Log,
    stalled: Vec<OutboxItem>,
    items: &mpsc::Receiver<OutboxItem>,
    progress: &OutboxProgress,
) {
    let end = stalled[0].journal_end;
    let durable = journal.wait_durable(end);
    eprintln!(
        "weir: outbox stalled after journal offset {end} ({STALL_ENV}; journal record durable: {}): its publishes are not appended",
        durable.is_ok()
    );
    progress.lock().failed = true;
    progress.moved.notify_all();
    let failed = || {
        Err(StorageError::Corrupt(
            "the outbox stalled (fault injection)".into(),
        ))
    };
    for item in stalled.into_iter().chain(items.iter()) {
        item.slot.set(failed());
    }
}

/// Appends a batch of commits' publishes once the last one's journal record is durable (the
/// journal is durable in order, so all of theirs are), not waiting for the appends to be
/// durable: each commit gets tickets for its own records.
fn append_outbox(journal: &Log, mut batch: Vec<OutboxItem>, progress: &OutboxProgress) {
    let end = batch.last().map_or(Offset(0), |i| i.journal_end);
    if let Err(e) = journal.wait_durable(end) {
        progress.lock().failed = true;
        progress.moved.notify_all();
        for item in batch {
            item.slot.set(Err(e.clone().into()));
        }
        return;
    }
    // Per log: the records of every commit in the batch, in order, and whose they are (commit,
    // group in it, how many).
    type Spans = Vec<(usize, usize, usize)>;
    let mut per_log: Vec<(Arc<Log>, DestinationName, Vec<Record>, Spans)> = Vec::new();
    for (c, item) in batch.iter_mut().enumerate() {
        for (g, (log, dest, _, records)) in item.groups.iter_mut().enumerate() {
            let at = match per_log.iter().position(|(l, ..)| Arc::ptr_eq(l, log)) {
                Some(at) => at,
                None => {
                    per_log.push((Arc::clone(log), dest.clone(), Vec::new(), Vec::new()));
                    per_log.len() - 1
                }
            };
            let (_, _, all, spans) = &mut per_log[at];
            spans.push((c, g, records.len()));
            all.append(records);
        }
    }
    let mut landed: Vec<Landed> = batch
        .iter()
        .map(|i| Ok((vec![Offset(0); i.total], Vec::new())))
        .collect();
    let mut ends = Vec::with_capacity(per_log.len());
    for (log, dest, records, spans) in per_log {
        let ticket = log.append(&records);
        let Some(appended) = ticket.offsets() else {
            let e = ticket.wait().err().unwrap_or(LogError::Closed);
            for (c, ..) in spans {
                landed[c] = Err(e.clone().into());
            }
            continue;
        };
        drop(ticket);
        let mut at = appended.first.0;
        for (c, g, n) in spans {
            if let Ok((offsets, tickets)) = &mut landed[c] {
                for (k, i) in batch[c].groups[g].2.iter().enumerate() {
                    offsets[*i] = Offset(at + k as u64);
                }
                tickets.push(log.ticket_for(super::log::Appended {
                    first: Offset(at),
                    count: n as u64,
                }));
            }
            at += n as u64;
        }
        ends.push((dest, appended.end()));
    }
    {
        let mut p = progress.lock();
        if landed.iter().all(Result::is_ok) {
            p.journal = p.journal.max(end);
        } else {
            p.failed = true;
        }
        for (dest, end) in ends {
            let e = p.ends.entry(dest).or_default();
            *e = (*e).max(end);
        }
    }
    progress.moved.notify_all();
    for (item, landed) in batch.into_iter().zip(landed) {
        item.slot.set(landed);
    }
}

/// The in-memory state and the journal offset it reflects.
#[derive(Debug)]
struct Applied {
    state: State,
    /// The journal offset after the last applied record.
    next: Offset,
    /// Per log, the end of the records published by applied journal records: a snapshot of
    /// the state waits until they are durable.
    published: HashMap<DestinationName, Offset>,
}

impl EmbeddedStorage {
    /// Opens (or creates) the store in `dir`, recovering the state from its snapshot and journal.
    pub fn open(
        dir: impl Into<PathBuf>,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedStorage, StorageError> {
        let dir = dir.into();
        let state_dir = dir.join("state");
        std::fs::create_dir_all(dir.join("logs")).map_err(|e| io_error(&dir, e))?;
        std::fs::create_dir_all(&state_dir).map_err(|e| io_error(&state_dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = std::fs::File::create(&lock_path).map_err(|e| io_error(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(StorageError::Locked(dir.clone()));
        }
        let (mut state, from) = snapshot::read(&state_dir)
            .map_err(StorageError::Corrupt)?
            .unwrap_or_default();
        // Every log is opened now: recovery checks journal records against their ends.
        let mut logs = HashMap::new();
        let logs_dir = dir.join("logs");
        for entry in std::fs::read_dir(&logs_dir).map_err(|e| io_error(&logs_dir, e))? {
            let entry = entry.map_err(|e| io_error(&logs_dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().and_then(|n| DestinationName::new(n).ok()) else {
                continue; // not a log of ours
            };
            if !entry.path().is_dir() {
                continue;
            }
            let (log, report) =
                Log::open(entry.path(), options.log_options(options.segment_bytes))?;
            log_report(&format!("log `{name}`"), &report);
            logs.insert(name, Arc::new(log));
        }
        // Journal records carry no ids: no dedup index (every record would share one id).
        let (journal, report) = Log::open(
            state_dir.join("journal"),
            options.log_options(16 << 20).dedup(false),
        )?;
        log_report("state journal", &report);
        let mut next = from.max(journal.start());
        // The first record whose publishes were lost, and how many records were discarded.
        let mut lost_at: Option<Offset> = None;
        let mut discarded = 0u64;
        // The outbox records of the records kept, in journal order, per log.
        let mut outboxes: HashMap<DestinationName, Vec<Record>> = HashMap::new();
        loop {
            let entries = journal.read(next, 1024, READ_BYTES)?;
            let Some(last) = entries.last() else { break };
            next = last.offset.next();
            for e in entries {
                let ops = state::decode(&e.record.payload).map_err(|why| {
                    StorageError::Corrupt(format!("state journal record {}: {why}", e.offset))
                })?;
                if lost_at.is_none() && publishes_lost(&ops, &logs) {
                    lost_at = Some(e.offset);
                }
                if lost_at.is_some() && ops.iter().any(Op::is_effect) {
                    discarded += 1;
                    continue;
                }
                for op in ops {
                    match op {
                        Op::Outbox { log, record } => outboxes.entry(log).or_default().push(record),
                        op => state.apply(op),
                    }
                }
            }
        }
        if let Some(at) = lost_at {
            tracing::warn!(
                "state journal: discarded {discarded} records from offset {at} on, whose published records were lost in a crash; their messages will be delivered again"
            );
            // Final: later records must never be checked against logs that have grown since.
            snapshot::write(&state_dir, &state, next).map_err(|e| io_error(&state_dir, e))?;
        }
        for (name, records) in outboxes {
            match logs.get(&name) {
                Some(log) => recover_outbox(&name, log, records)?,
                None => tracing::warn!(
                    "state journal: {} published records to `{name}` cannot be checked: the log is gone",
                    records.len()
                ),
            }
        }
        let journal = Arc::new(journal);
        let (outbox, items) = mpsc::channel();
        let outbox_progress = Arc::new(OutboxProgress::default());
        outbox_progress.lock().journal = next;
        let outbox_thread = {
            let (journal, progress) = (Arc::clone(&journal), Arc::clone(&outbox_progress));
            let stall_after = options.outbox_stall_after;
            std::thread::Builder::new()
                .name("weir-outbox".into())
                .spawn(move || run_outbox(journal, items, progress, stall_after))
                .map_err(|e| io_error(&dir, e))?
        };
        Ok(EmbeddedStorage {
            dir,
            options,
            logs: RwLock::new(logs),
            journal,
            state: Mutex::new(Applied {
                state,
                next,
                published: HashMap::new(),
            }),
            snapshotting: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            outbox: Mutex::new(Some(outbox)),
            outbox_thread: Some(outbox_thread),
            outbox_progress,
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log of a destination.
    pub fn log(&self, name: &DestinationName) -> Option<Arc<Log>> {
        self.logs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The state, for reads and writes. A panic while it was held may have left it half
    /// changed: reads go on, but the store stops taking writes (see
    /// [`EmbeddedStorage::refuse_if_stopped`]).
    fn lock_state(&self) -> MutexGuard<'_, Applied> {
        self.state.lock().unwrap_or_else(|e| {
            if !self.poisoned.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    "the store's state was left half-changed by a panic: it takes no more writes; restart weir (the journal is intact)"
                );
            }
            e.into_inner()
        })
    }

    /// The refusal of a store whose state a panic may have left half changed.
    fn poisoned_error() -> StorageError {
        StorageError::Corrupt(
            "the store's in-memory state was left half-changed by a panic and takes no more writes; restart weir (the journal on disk is intact)".into(),
        )
    }

    fn log_or_err(&self, name: &DestinationName) -> Result<Arc<Log>, StorageError> {
        self.log(name)
            .ok_or_else(|| StorageError::UnknownLog(name.clone()))
    }

    /// Appends one journal record (`payload`, the encoding of `ops`) and applies `ops` while
    /// still holding `applied`, so state changes apply in journal order. Returns the record's
    /// ticket without waiting.
    fn journal_ops(
        &self,
        mut applied: MutexGuard<'_, Applied>,
        payload: Vec<u8>,
        ops: Vec<Op>,
    ) -> Result<super::log::AppendTicket, StorageError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Self::poisoned_error());
        }
        let ticket = self
            .journal
            .append(std::slice::from_ref(&journal_record(payload)));
        let Some(appended) = ticket.offsets() else {
            drop(applied);
            // Refused outright: the ticket holds the reason.
            return Err(ticket.wait().err().unwrap_or(LogError::Closed).into());
        };
        applied.next = appended.end();
        for op in ops {
            if let Op::Published { log, end } = &op {
                let e = applied.published.entry(log.clone()).or_default();
                *e = (*e).max(*end);
            }
            applied.state.apply(op);
        }
        Ok(ticket)
    }

    /// As [`EmbeddedStorage::journal_ops`], then runs `then` with the journal offset after the
    /// record, still holding `applied` (so what `then` hands on is in journal order). An error
    /// of `then` stops the store: the record is in the journal and cannot be taken back.
    fn journal_ops_then<E: std::fmt::Display>(
        &self,
        mut applied: MutexGuard<'_, Applied>,
        payload: Vec<u8>,
        ops: Vec<Op>,
        then: impl FnOnce(Offset) -> Result<(), E>,
    ) -> Result<super::log::AppendTicket, StorageError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Self::poisoned_error());
        }
        let ticket = self
            .journal
            .append(std::slice::from_ref(&journal_record(payload)));
        let Some(appended) = ticket.offsets() else {
            drop(applied);
            return Err(ticket.wait().err().unwrap_or(LogError::Closed).into());
        };
        applied.next = appended.end();
        for op in ops {
            applied.state.apply(op);
        }
        if let Err(e) = then(appended.end()) {
            drop(applied);
            return Err(StorageError::Corrupt(format!(
                "the outbox thread is gone ({e}); restart to recover the journal's outbox"
            )));
        }
        Ok(ticket)
    }

    /// Appends a commit of publishes alone to their logs at once.
    fn append_now(
        &self,
        groups: Vec<Group>,
        total: usize,
        dedup: bool,
    ) -> Result<CommitTicket, StorageError> {
        let mut offsets = vec![Offset(0); total];
        let mut pending = Vec::with_capacity(groups.len());
        for (log, _, idx, records) in &groups {
            if dedup {
                let (outcome, ticket) = log.append_dedup(records).into_parts();
                for (i, d) in idx.iter().zip(&outcome?) {
                    offsets[*i] = d.offset;
                }
                pending.extend(ticket);
            } else {
                let ticket = log.append(records);
                let Some(appended) = ticket.offsets() else {
                    return Err(ticket.wait().err().unwrap_or(LogError::Closed).into());
                };
                for (n, i) in idx.iter().enumerate() {
                    offsets[*i] = Offset(appended.first.0 + n as u64);
                }
                pending.push(ticket);
            }
        }
        Ok(CommitTicket::new(offsets, pending))
    }

    /// Journals the delivery counts of `offsets` (the next count of each, or `set`) in one
    /// record and applies them; returns the counts and the record's ticket, not waited for.
    fn journal_deliveries(
        &self,
        binding: &BindingName,
        offsets: &[Offset],
        set: Option<&[u32]>,
    ) -> Result<(Vec<u32>, super::log::AppendTicket), StorageError> {
        let applied = self.lock_state();
        let mut payload = Vec::new();
        let mut ops = Vec::with_capacity(offsets.len());
        let mut counts = Vec::with_capacity(offsets.len());
        for (i, &offset) in offsets.iter().enumerate() {
            let count = match set {
                Some(set) => set[i],
                None => applied.state.deliveries(binding, offset) + 1,
            };
            state::encode_delivered(&mut payload, binding, offset, count);
            ops.push(Op::Delivered {
                binding: binding.clone(),
                offset,
                count,
            });
            counts.push(count);
        }
        let ticket = self.journal_ops(applied, payload, ops)?;
        Ok((counts, ticket))
    }

    /// Fail-stop for the whole store: once the state journal has stopped (a failed write or
    /// fsync), nothing can be acknowledged any more, so no log takes writes either.
    fn refuse_if_stopped(&self) -> Result<(), StorageError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Self::poisoned_error());
        }
        match self.journal.stopped() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Writes a snapshot and trims the journal when it has grown past `snapshot_bytes`.
    fn maybe_snapshot(&self) {
        if self.journal.size_bytes() < self.options.snapshot_bytes
            || self.snapshotting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (state, next, mut published, sent) = {
            let applied = self.lock_state();
            (
                applied.state.clone(),
                applied.next,
                applied.published.clone(),
                self.outbox_progress.lock().sent,
            )
        };
        // The snapshot replaces journal records that recovery would read: it may only cover
        // records whose outbox records are durable in their logs.
        {
            let mut p = self.outbox_progress.lock();
            while p.journal < sent && !p.failed {
                p = self
                    .outbox_progress
                    .moved
                    .wait(p)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if p.failed {
                tracing::warn!("no state snapshot: the outbox stopped after a failed write");
                self.snapshotting.store(false, Ordering::Release);
                return;
            }
            for (name, end) in &p.ends {
                let e = published.entry(name.clone()).or_default();
                *e = (*e).max(*end);
            }
        }
        for (name, end) in published {
            if let Some(log) = self.log(&name)
                && let Err(e) = log.wait_durable(end)
            {
                tracing::warn!("no state snapshot: log `{name}` failed: {e}");
                self.snapshotting.store(false, Ordering::Release);
                return;
            }
        }
        let state_dir = self.dir.join("state");
        match snapshot::write(&state_dir, &state, next) {
            Ok(()) => {
                if let Err(e) = self.journal.delete_before(next) {
                    tracing::warn!("cannot trim the state journal after a snapshot: {e}");
                }
            }
            Err(e) => tracing::warn!(
                "cannot write a state snapshot in {}: {e}",
                state_dir.display()
            ),
        }
        self.snapshotting.store(false, Ordering::Release);
    }
}

/// The records a commit appends to one log: the log, its name, the records' indexes in the
/// commit, and the records.
type Group = (Arc<Log>, DestinationName, Vec<usize>, Vec<Record>);

/// Appends the outbox records of durable journal records that a crash cut off before they were
/// stored in `log`: those after the newest one found by its id (see the module docs).
fn recover_outbox(
    name: &DestinationName,
    log: &Log,
    records: Vec<Record>,
) -> Result<(), StorageError> {
    let mut stored_upto = 0;
    for (i, r) in records.iter().enumerate().rev() {
        if log.find_id(&r.id)?.is_some() {
            stored_upto = i + 1;
            break;
        }
    }
    let missing = &records[stored_upto..];
    if missing.is_empty() {
        return Ok(());
    }
    log.append(missing).wait()?;
    tracing::info!(
        "log `{name}`: appended {} published records whose commit was durable but whose append a crash cut off",
        missing.len()
    );
    Ok(())
}

/// Whether a journal record's publishes are missing from the recovered logs (a log that is gone
/// altogether cannot be checked and counts as present).
fn publishes_lost(ops: &[Op], logs: &HashMap<DestinationName, Arc<Log>>) -> bool {
    ops.iter().any(|op| match op {
        Op::Published { log, end } => logs.get(log).is_some_and(|l| l.end() < *end),
        _ => false,
    })
}

/// Log entries as the `Storage` trait hands them out.
fn stored(entries: Vec<super::log::Entry>) -> Vec<Stored> {
    entries
        .into_iter()
        .map(|e| Stored {
            offset: e.offset,
            record: Arc::new(e.record),
        })
        .collect()
}

/// A state journal record carrying encoded state operations.
fn journal_record(payload: Vec<u8>) -> Record {
    Record {
        id: String::new(),
        key: None,
        headers: Vec::new(),
        payload,
        timestamp_ms: crate::ids::now_ms(),
        reply_to: None,
        correlation_id: None,
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Log(LogError::io(path, e))
}

fn log_report(what: &str, report: &RecoveryReport) {
    if let Some(cut) = &report.torn_tail {
        tracing::warn!("{what}: cut a torn tail on open: {cut:?}");
    }
    if let Some(cut) = &report.repaired {
        tracing::warn!("{what}: repair dropped damaged data: {cut:?}");
    }
}

impl Storage for EmbeddedStorage {
    fn open_log(&self, name: &DestinationName) -> Result<(), StorageError> {
        let mut logs = self.logs.write().unwrap_or_else(|e| e.into_inner());
        if logs.contains_key(name) {
            return Ok(());
        }
        let dir = self.dir.join("logs").join(name.as_str());
        let (log, report) = Log::open(dir, self.options.log_options(self.options.segment_bytes))?;
        log_report(&format!("log `{name}`"), &report);
        logs.insert(name.clone(), Arc::new(log));
        Ok(())
    }

    fn has_log(&self, name: &DestinationName) -> bool {
        self.log(name).is_some()
    }

    fn append_dedup(
        &self,
        log: &DestinationName,
        records: Vec<Record>,
    ) -> Result<Vec<(Offset, bool)>, StorageError> {
        self.refuse_if_stopped()?;
        let log = self.log_or_err(log)?;
        let deduped = log.append_dedup(&records).wait()?;
        Ok(deduped
            .into_iter()
            .map(|d| (d.offset, d.duplicate))
            .collect())
    }

    fn read(
        &self,
        log: &DestinationName,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Stored>, StorageError> {
        let log = self.log_or_err(log)?;
        let from = from.max(log.start());
        let entries = log.read(from, max, READ_BYTES)?;
        Ok(stored(entries))
    }

    fn watch_end(&self, log: &DestinationName) -> Result<watch::Receiver<Offset>, StorageError> {
        Ok(self.log_or_err(log)?.watch_end())
    }

    fn read_key(
        &self,
        log: &DestinationName,
        key: &str,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Stored>, StorageError> {
        let log = self.log_or_err(log)?;
        let from = from.max(log.start());
        let entries = log.read_key(key, from, max)?;
        Ok(stored(entries))
    }

    fn offset_at_time(
        &self,
        log: &DestinationName,
        timestamp_ms: u64,
    ) -> Result<Offset, StorageError> {
        let log = self.log_or_err(log)?;
        Ok(log
            .offset_for_timestamp(timestamp_ms)?
            .unwrap_or_else(|| log.end()))
    }

    fn usage(&self, log: &DestinationName) -> Result<(Offset, u64), StorageError> {
        let log = self.log_or_err(log)?;
        Ok((log.start(), log.size_bytes()))
    }

    fn enforce_retention(
        &self,
        log: &DestinationName,
        retention: &Retention,
    ) -> Result<Reclaimed, StorageError> {
        let log = self.log_or_err(log)?;
        let mut reclaimed = Reclaimed::default();
        if let Some(age) = retention.max_age {
            let cutoff = crate::ids::now_ms().saturating_sub(age.as_millis() as u64);
            let freed = log.delete_older_than(cutoff)?;
            reclaimed.records += freed.records;
            reclaimed.bytes += freed.bytes;
        }
        if let Some(max) = retention.max_bytes {
            let freed = log.delete_to_fit(max)?;
            reclaimed.records += freed.records;
            reclaimed.bytes += freed.bytes;
        }
        if retention.compact {
            let compacted = log.compact()?;
            reclaimed.records += compacted.records;
            reclaimed.bytes += compacted.bytes;
        }
        Ok(reclaimed)
    }

    fn cursor(&self, binding: &BindingName) -> Offset {
        self.lock_state()
            .state
            .cursors
            .get(binding)
            .copied()
            .unwrap_or_default()
    }

    fn is_acked(&self, binding: &BindingName, offset: Offset) -> bool {
        self.lock_state().state.is_acked(binding, offset)
    }

    fn lease(
        &self,
        binding: &BindingName,
        offset: Offset,
        visibility: std::time::Duration,
    ) -> Result<u32, StorageError> {
        let count = self.begin_delivery(binding, offset)?;
        let until = crate::ids::now_ms().saturating_add(visibility.as_millis() as u64);
        self.lock_state().state.lease(binding, offset, until);
        Ok(count)
    }

    fn expired_leases(&self, binding: &BindingName, now_ms: u64) -> Vec<Offset> {
        self.lock_state().state.expired_leases(binding, now_ms)
    }

    fn advance_cursor(&self, cursor: &BindingName, to: Offset) -> Result<(), StorageError> {
        let applied = self.lock_state();
        if applied.state.cursors.get(cursor).is_some_and(|c| *c >= to) {
            return Ok(());
        }
        let mut payload = Vec::new();
        state::encode_cursor(&mut payload, cursor, to);
        let op = Op::Cursor {
            binding: cursor.clone(),
            offset: to,
        };
        self.journal_ops(applied, payload, vec![op])?.wait()?;
        Ok(())
    }

    fn begin_delivery(&self, binding: &BindingName, offset: Offset) -> Result<u32, StorageError> {
        let (counts, ticket) = self.journal_deliveries(binding, &[offset], None)?;
        ticket.wait()?;
        self.maybe_snapshot();
        Ok(counts[0])
    }

    fn begin_deliveries(
        &self,
        binding: &BindingName,
        offsets: &[Offset],
    ) -> Result<Vec<u32>, StorageError> {
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        let (counts, ticket) = self.journal_deliveries(binding, offsets, None)?;
        ticket.wait_written()?;
        self.maybe_snapshot();
        Ok(counts)
    }

    fn set_deliveries(
        &self,
        binding: &BindingName,
        counts: &[(Offset, u32)],
    ) -> Result<(), StorageError> {
        if counts.is_empty() {
            return Ok(());
        }
        let offsets: Vec<Offset> = counts.iter().map(|(o, _)| *o).collect();
        let set: Vec<u32> = counts.iter().map(|(_, c)| *c).collect();
        // Not waited for: a lost correction leaves a count one too high, never too low.
        let _ticket = self.journal_deliveries(binding, &offsets, Some(&set))?;
        Ok(())
    }

    fn kv_get(&self, plugin: &PluginName, key: &str) -> Option<Vec<u8>> {
        self.lock_state().state.kv.get(plugin)?.get(key).cloned()
    }

    fn kv_list(
        &self,
        plugin: &PluginName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        let applied = self.lock_state();
        let Some(map) = applied.state.kv.get(plugin) else {
            return Vec::new();
        };
        super::list_keys(map, prefix, start_after, limit)
    }

    fn check_publishes(&self, publishes: &[(DestinationName, Record)]) -> Result<(), StorageError> {
        for (dest, record) in publishes {
            Log::check_record(record)?;
            if !self.has_log(dest) {
                return Err(StorageError::UnknownLog(dest.clone()));
            }
        }
        Ok(())
    }

    fn submit(&self, commit: Commit) -> Result<CommitTicket, StorageError> {
        self.refuse_if_stopped()?;
        // Every record must fit a log frame before anything is written: a commit is refused
        // whole (an outbox record journaled and then refused by its log would be appended
        // again, and refused again, at every start).
        for (_, record) in &commit.publishes {
            Log::check_record(record)?;
        }
        // 1. Published records, grouped per log in order (all logs resolved before anything is
        //    appended, so an unknown destination changes nothing).
        let mut groups: Vec<Group> = Vec::new();
        for (i, (dest, record)) in commit.publishes.into_iter().enumerate() {
            let log = self.log_or_err(&dest)?;
            match groups.iter_mut().find(|(l, ..)| Arc::ptr_eq(l, &log)) {
                Some((_, _, idx, records)) => {
                    idx.push(i);
                    records.push(record);
                }
                None => groups.push((log, dest, vec![i], vec![record])),
            }
        }
        let total: usize = groups.iter().map(|(_, _, idx, _)| idx.len()).sum();
        // 2. Key-value writes and acknowledgements: one journal record, which carries the
        //    publishes too (the outbox).
        let mut payload = Vec::new();
        let mut ops = Vec::new();
        if let Some((plugin, writes)) = commit.kv {
            for (key, value) in writes {
                state::encode_kv(&mut payload, &plugin, &key, value.as_deref());
                ops.push(match value {
                    Some(value) => Op::KvSet {
                        plugin: plugin.clone(),
                        key,
                        value,
                    },
                    None => Op::KvDelete {
                        plugin: plugin.clone(),
                        key,
                    },
                });
            }
        }
        for (binding, offset) in commit.acks {
            state::encode_ack(&mut payload, &binding, offset);
            ops.push(Op::Ack { binding, offset });
        }
        if ops.is_empty() {
            // Publishes alone: no journal record, nothing depends on them.
            return self.append_now(groups, total, commit.dedup);
        }
        if total == 0 {
            return Ok(CommitTicket::new(
                Vec::new(),
                vec![self.journal_ops(self.lock_state(), payload, ops)?],
            ));
        }
        for (_, dest, _, records) in &groups {
            for r in records {
                state::encode_outbox(&mut payload, dest, r);
            }
        }
        // The outbox records are not applied to the state: the journal keeps them (for
        // recovery) and the item hands them to the outbox thread.
        let slot = Arc::new(Slot::default());
        let applied = self.lock_state();
        let outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = outbox.as_ref() else {
            return Err(LogError::Closed.into());
        };
        let journal = self.journal_ops_then(applied, payload, ops, |journal_end| {
            self.outbox_progress.lock().sent = journal_end;
            sender.send(OutboxItem {
                journal_end,
                groups,
                total,
                slot: Arc::clone(&slot),
            })
        })?;
        Ok(CommitTicket::outboxed(journal, slot))
    }

    fn commit(&self, commit: Commit) -> Result<Vec<Offset>, StorageError> {
        let offsets = self.submit(commit)?.wait()?;
        self.maybe_snapshot();
        Ok(offsets)
    }
}

impl Drop for EmbeddedStorage {
    fn drop(&mut self) {
        // The outbox thread finishes what it was given (the journal and logs are still open).
        self.outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = self.outbox_thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
