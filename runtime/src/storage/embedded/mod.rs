//! The embedded store: every queue and topic is a durable [`Log`] in `<dir>/logs/<name>/`, and
//! binding cursors and plugin key-value state live in a state journal (`<dir>/state/journal/`,
//! itself a `Log`) with periodic snapshots (`<dir>/state/snapshot`).
//!
//! A [`Commit`] appends its published records to their logs and, in the same step, one journal
//! record with its key-value writes, its acknowledgements and where its publishes end in each
//! log (`Published` operations); both are fsynced by their logs' group commit, in parallel. The
//! commit is durable when all of them are. A crash can make the journal record durable while a
//! publish is lost: recovery checks every record's `Published` ends against the recovered logs,
//! and from the first record whose publishes are missing on, it discards every record carrying
//! effects (key-value writes or publishes; a later one may have read the state the lost one
//! wrote), keeping facts about deliveries (counts, at-most-once acknowledgements). A snapshot
//! written right then makes the decision final. The messages of the discarded records are
//! delivered again: a cursor never stays past a message whose effects were lost.
//!
//! **Invariant:** journal records are applied to the in-memory state in journal order (append
//! and apply happen under one lock), so a state read never reflects a change that a crash could
//! undo while keeping a later one. A snapshot only covers records whose publishes are durable.

mod snapshot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::watch;

use super::log::{Durability, Io, Log, LogError, LogOptions, Recovery, RecoveryReport, StdIo};
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
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            durability: Durability::Always,
            recovery: Recovery::Strict,
            segment_bytes: 256 << 20,
            snapshot_bytes: 64 << 20,
            io: Arc::new(StdIo),
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
    journal: Log,
    state: Mutex<Applied>,
    snapshotting: AtomicBool,
    /// Held for the store's lifetime: one process per store directory.
    _lock: std::fs::File,
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
                ops.into_iter().for_each(|op| state.apply(op));
            }
        }
        if let Some(at) = lost_at {
            tracing::warn!(
                "state journal: discarded {discarded} records from offset {at} on, whose published records were lost in a crash; their messages will be delivered again"
            );
            // Final: later records must never be checked against logs that have grown since.
            snapshot::write(&state_dir, &state, next).map_err(|e| io_error(&state_dir, e))?;
        }
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

    fn lock_state(&self) -> MutexGuard<'_, Applied> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
        let (state, next, published) = {
            let applied = self.lock_state();
            (
                applied.state.clone(),
                applied.next,
                applied.published.clone(),
            )
        };
        // The snapshot replaces journal records that recovery would check: it may only cover
        // records whose publishes are durable.
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

    fn submit(&self, commit: Commit) -> Result<CommitTicket, StorageError> {
        self.refuse_if_stopped()?;
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
        let mut offsets = vec![Offset(0); total];
        let mut pending = Vec::with_capacity(groups.len() + 1);
        let mut payload = Vec::new();
        let mut ops = Vec::new();
        for (log, dest, idx, records) in &groups {
            let end = if commit.dedup {
                let (outcome, ticket) = log.append_dedup(records).into_parts();
                let deduped = outcome?;
                let mut end = None;
                for (i, d) in idx.iter().zip(&deduped) {
                    offsets[*i] = d.offset;
                    if !d.duplicate {
                        end = Some(d.offset.next());
                    }
                }
                pending.extend(ticket);
                end
            } else {
                let ticket = log.append(records);
                let Some(appended) = ticket.offsets() else {
                    return Err(ticket.wait().err().unwrap_or(LogError::Closed).into());
                };
                for (n, i) in idx.iter().enumerate() {
                    offsets[*i] = Offset(appended.first.0 + n as u64);
                }
                pending.push(ticket);
                Some(appended.end())
            };
            if let Some(end) = end {
                state::encode_published(&mut payload, dest, end);
                ops.push(Op::Published {
                    log: dest.clone(),
                    end,
                });
            }
        }

        // 2. Key-value writes, acknowledgements and where the publishes end: one journal record.
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
        // Publishes alone need no journal record: nothing depends on them.
        if ops.iter().any(|op| !matches!(op, Op::Published { .. })) {
            pending.push(self.journal_ops(self.lock_state(), payload, ops)?);
        }
        Ok(CommitTicket::new(offsets, pending))
    }

    fn commit(&self, commit: Commit) -> Result<Vec<Offset>, StorageError> {
        let offsets = self.submit(commit)?.wait()?;
        self.maybe_snapshot();
        Ok(offsets)
    }
}

#[cfg(test)]
mod tests;
