//! The delivery engine: what happens around every invocation of a binding's plugin. It reads the
//! source ahead into a bounded window, picks what may run under the binding's ordering, runs it
//! in batches on blocking lanes, and commits each invocation's outcome — its key-value writes,
//! publishes, reply or dead letter, and the acknowledgement — as one atomic storage commit,
//! submitted the moment the handler returns. Commits become durable in the background while the
//! next batch runs; a message leaves the window when its commit is durable.
//!
//! Guarantees:
//! - `at-most-once`: a batch is acknowledged durably before any of it runs; effects commit
//!   after, without an acknowledgement. A crash loses what was running, never repeats it.
//! - `at-least-once`: the acknowledgement is in the same commit as the effects, so it is never
//!   durable before them; a crash before that delivers the message again.
//! - `exactly-once`: as at-least-once, and published records get ids derived from the binding
//!   and the message offset. The store appends a commit's publishes only once its journal
//!   record (key-value writes and acknowledgement) is durable (the outbox, see
//!   `storage/embedded`), so a crash loses a commit whole, and the redelivery publishes and
//!   writes once, against the state as it is then; a message whose commit is durable is
//!   acknowledged and never runs again.
//!
//! **Invariant:** an invocation's effects are committed only when its outcome is `ack` or
//! `reply`, together with its acknowledgement (except under at-most-once, acknowledged before).
//! Invocations of one plugin that touch its key-value state hold the plugin's gate from their
//! first key-value call until their commit is submitted, so commits apply in the order the
//! invocations read and wrote.

pub mod park;
mod stats;
mod window;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

pub use park::{ParkedKey, Parking};
pub use stats::{BindingSnapshot, BindingStats, CLASSES as FAILURE_CLASSES};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use window::{Phase, Window};

use crate::config::{BindingConfig, Guarantee, Ordering, Poison};
use crate::host::{Failure, Invocation, Message, Outcome, Plugin};
use crate::names::{Attempt, DestinationName, Offset, PluginName};
use crate::storage::{Commit, CommitTicket, Record, Storage, StorageError, Stored};

/// Messages run in one batch at most.
const BATCH: usize = 512;
/// Estimated work per lane below which a batch does not start another lane (a lane is a thread
/// started for the batch: worth it only for enough work).
const LANE_WORK: Duration = Duration::from_micros(200);
/// The invocation time assumed before any was measured: high, so that a slow plugin's first
/// batches already run in parallel.
const FIRST_GUESS_NS: u64 = 1_000_000;
/// Records read from the source at a time at most.
const READ_BATCH: usize = 1024;

/// What runs a message: a plugin, or a stand-in in tests.
pub trait Handler: Send + Sync + 'static {
    /// The plugin whose key-value state the handler's effects write.
    fn plugin(&self) -> &PluginName;
    /// Handles one message within `timeout`.
    fn handle(&self, message: &Message, timeout: Duration) -> Invocation;
    /// The version that handles messages now, as named in traces and metrics (computed only
    /// when a trace is recorded).
    fn version(&self) -> String {
        String::new()
    }
}

impl Handler for Plugin {
    fn plugin(&self) -> &PluginName {
        self.name()
    }

    fn version(&self) -> String {
        crate::metrics::plugin_version(self.hash()).to_owned()
    }

    fn handle(&self, message: &Message, timeout: Duration) -> Invocation {
        self.invoke_within(message, timeout)
    }
}

/// Runs one binding until `shutdown` turns true; the batch running then finishes and every
/// submitted commit becomes durable before it returns. Keys parked in the store stay parked
/// until `parking` says they were unparked.
pub async fn run_binding(
    binding: BindingConfig,
    handler: Arc<dyn Handler>,
    storage: Arc<dyn Storage>,
    stats: Arc<BindingStats>,
    parking: Arc<Parking>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StorageError> {
    let mut end = storage.watch_end(&binding.source)?;
    let mut next_read = storage.cursor(&binding.name);
    let mut window = Window::new(binding.ordering);
    // Subscribed before the parked keys are read: an unpark from then on is seen.
    let mut released = parking.subscribe();
    let mut unparked = false;
    for p in park::parked(&*storage, &binding.name, usize::MAX) {
        window.park_key(p.key, p.offset);
    }
    let max_in_flight = binding.max_in_flight as usize;
    let ctx = Arc::new(Ctx {
        binding,
        handler,
        storage,
        stats,
        invocation_ns: std::sync::atomic::AtomicU64::new(FIRST_GUESS_NS),
    });
    let mut commits: JoinSet<Result<Vec<(Offset, Finished)>, StorageError>> = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            while let Some(done) = commits.join_next().await {
                let done = done.expect("commit waits do not panic")?;
                finish(&mut window, &ctx.stats, done);
            }
            return Ok(());
        }
        // 0. Let go of messages whose commits became durable (without waiting), and release
        // keys unparked in the store.
        while let Some(done) = commits.try_join_next() {
            let done = done.expect("commit waits do not panic")?;
            finish(&mut window, &ctx.stats, done);
        }
        if std::mem::take(&mut unparked) || released.has_changed().unwrap_or(false) {
            released.borrow_and_update();
            ctx.release_unparked(&mut window, &mut next_read)?;
        }
        // 1. Read ahead, as far as the window has room.
        let end_now = *end.borrow_and_update();
        // While commits are draining the window, reads wait for room for a good batch: many
        // reads of a few records each cost more than fewer larger ones.
        let batch_room = (max_in_flight / 8).clamp(1, READ_BATCH);
        while next_read < end_now
            && window.len() < max_in_flight
            && (commits.is_empty() || max_in_flight - window.len() >= batch_room)
        {
            let want = (max_in_flight - window.len()).min(READ_BATCH);
            let read = ctx.storage.read(&ctx.binding.source, next_read, want)?;
            let Some(last) = read.last() else { break };
            next_read = last.offset.next();
            for stored in read {
                if !ctx.storage.is_acked(&ctx.binding.name, stored.offset) {
                    window.push(stored);
                }
            }
        }
        ctx.stats.gauges(window.len(), window.parked_keys());

        // 2. Run what may run now.
        let selected = window.select(Instant::now(), BATCH);
        if !selected.is_empty() {
            let jobs: Vec<Job> = selected
                .iter()
                .filter_map(|o| window.get(*o))
                .map(|e| Job {
                    stored: e.stored.clone(),
                    tries: e.tries,
                    failures: e.failures.clone(),
                })
                .collect();
            let c = Arc::clone(&ctx);
            let (results, mut durable) = tokio::task::spawn_blocking(move || c.run_batch(jobs))
                .await
                .expect("invocations do not panic")?;
            for r in results {
                match r {
                    Ran::Handled { offset } => window.set(offset, Phase::Committing),
                    Ran::Retry {
                        offset,
                        delay,
                        failure,
                        ..
                    } => {
                        ctx.stats.retried.fetch_add(1, Relaxed);
                        if let Some(f) = failure {
                            window.failed(offset, f);
                        }
                        window.set(offset, Phase::RetryAt(Instant::now() + delay));
                    }
                    Ran::Park {
                        offset,
                        failure,
                        attempts,
                    } => {
                        if let Some(key) = window.park(offset) {
                            let parked = ParkedKey {
                                key,
                                offset,
                                attempts,
                                reason: failure,
                                since_ms: crate::ids::now_ms(),
                            };
                            let ticket =
                                ctx.storage.submit(park::park(&ctx.binding.name, &parked))?;
                            durable.push(Submitted {
                                ticket,
                                done: Vec::new(),
                            });
                        }
                    }
                    Ran::Skipped { offset, .. } => window.unselect(offset),
                }
            }
            if !durable.is_empty() {
                commits.spawn(async move {
                    let mut done = Vec::new();
                    for s in durable {
                        s.ticket.durable().await?;
                        done.extend(s.done);
                    }
                    Ok(done)
                });
            }
            continue;
        }

        // 3. Nothing may run: wait for new messages, a durable commit, a retry or shutdown.
        let retry_at = window.next_retry();
        let room = window.len() < max_in_flight;
        tokio::select! {
            changed = end.changed(), if room => {
                if changed.is_err() {
                    return Ok(()); // the log was closed: the store is shutting down
                }
            }
            Some(done) = commits.join_next(), if !commits.is_empty() => {
                let done = done.expect("commit waits do not panic")?;
                finish(&mut window, &ctx.stats, done);
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
            Ok(()) = released.changed() => unparked = true,
            _ = shutdown.changed() => {}
        }
    }
}

/// Lets go of messages whose commits are durable, and counts them.
fn finish(window: &mut Window, stats: &BindingStats, done: Vec<(Offset, Finished)>) {
    for (offset, finished) in done {
        window.finish(offset);
        stats.finished(finished);
    }
}

/// How a message left the binding.
#[derive(Debug, Clone, Copy)]
enum Finished {
    Acked,
    Replied,
    DeadLettered,
    /// Acknowledged without running: a replayed copy meant for another binding.
    Skipped,
}

/// A message handed to a batch.
struct Job {
    stored: Stored,
    /// Times it was selected in this process, this time included.
    tries: u32,
    failures: Vec<String>,
}

/// Commits submitted by a lane, with the messages each finishes.
struct Submitted {
    ticket: CommitTicket,
    done: Vec<(Offset, Finished)>,
}

/// The commit a lane is gathering: handled messages that did not touch key-value state commit
/// together (one journal record), flushed before any commit that did and at the lane's end.
#[derive(Default)]
struct Gather {
    commit: Commit,
    done: Vec<(Offset, Finished)>,
    /// About how many bytes the commit's journal record takes (its publishes go in it too).
    bytes: usize,
}

/// A lane submits what it gathered once it is this large, so that one commit stays well
/// within a journal record (64 MiB) however large a batch's outputs are.
const GATHER_BYTES: usize = 8 << 20;

/// What running one message came to.
enum Ran {
    /// Handled or dead-lettered: its commit was submitted (see [`Submitted`]).
    Handled { offset: Offset },
    /// Runs again after `delay`.
    Retry {
        offset: Offset,
        delay: Duration,
        failure: Option<String>,
        /// The delivery count to set back: the failure did not use up an attempt (the plugin
        /// version that failed is on probation).
        give_back: Option<u32>,
    },
    /// Failed for good; its key parks.
    Park {
        offset: Offset,
        failure: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Not run: an earlier message it must follow failed in the same batch. `count` is the
    /// delivery count recorded for it, one too many.
    Skipped { offset: Offset, count: u32 },
}

struct Ctx {
    binding: BindingConfig,
    handler: Arc<dyn Handler>,
    storage: Arc<dyn Storage>,
    stats: Arc<BindingStats>,
    /// Moving average of one invocation's time, which decides how many lanes a batch gets.
    invocation_ns: std::sync::atomic::AtomicU64,
}

impl Ctx {
    /// Runs a batch (on a blocking thread): records the deliveries, splits the batch into lanes
    /// that keep each key (or, under `fifo`, everything) in one lane and in order, and runs the
    /// lanes in parallel.
    fn run_batch(&self, jobs: Vec<Job>) -> Result<(Vec<Ran>, Vec<Submitted>), StorageError> {
        let offsets: Vec<Offset> = jobs.iter().map(|j| j.stored.offset).collect();
        let counts = match self.binding.guarantee {
            Guarantee::AtMostOnce => {
                // Acknowledged, durably, before any of them runs.
                let first_tries: Vec<_> = jobs
                    .iter()
                    .filter(|j| j.tries == 1)
                    .map(|j| (self.binding.name.clone(), j.stored.offset))
                    .collect();
                if !first_tries.is_empty() {
                    self.storage.commit(Commit {
                        acks: first_tries,
                        ..Commit::default()
                    })?;
                }
                jobs.iter().map(|j| j.tries).collect()
            }
            // Durable delivery counts: a message whose handling kills the host is not
            // delivered more often than `max_attempts`.
            _ => self
                .storage
                .begin_deliveries(&self.binding.name, &offsets)?,
        };
        let work = self
            .invocation_ns
            .load(Relaxed)
            .saturating_mul(jobs.len() as u64);
        let lanes = match self.binding.ordering {
            Ordering::Fifo => 1,
            _ => (self.binding.concurrency as usize)
                .min(jobs.len())
                .min(work.div_ceil(LANE_WORK.as_nanos() as u64) as usize)
                .max(1),
        };
        let started = std::time::Instant::now();
        let ran = jobs.len() as u64;
        let mut split: Vec<Vec<(Job, u32)>> = (0..lanes).map(|_| Vec::new()).collect();
        for (i, (job, count)) in jobs.into_iter().zip(counts).enumerate() {
            let lane = match (&job.stored.record.key, self.binding.ordering) {
                (Some(key), Ordering::Key) => (lane_hash(key) % lanes as u64) as usize,
                _ => i % lanes,
            };
            split[lane].push((job, count));
        }
        let lane_count = lanes;
        let mut split = split.into_iter();
        let first = split.next().unwrap_or_default();
        let rest: Vec<_> = split.collect();
        let mut out = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = rest
                .into_iter()
                .map(|lane| s.spawn(move || self.run_lane(lane)))
                .collect();
            out.push(self.run_lane(first));
            for h in handles {
                out.push(h.join().expect("lanes do not panic"));
            }
        });
        // Lanes ran in parallel: per invocation, the elapsed time times the lanes.
        let per =
            (started.elapsed().as_nanos() as u64).saturating_mul(lane_count as u64) / ran.max(1);
        let avg = self.invocation_ns.load(Relaxed);
        self.invocation_ns.store(avg - avg / 4 + per / 4, Relaxed);
        let mut all = Vec::new();
        let mut submitted = Vec::new();
        for lane in out {
            let (ran, subs) = lane?;
            all.extend(ran);
            submitted.extend(subs);
        }
        if self.binding.guarantee != Guarantee::AtMostOnce {
            let undo: Vec<(Offset, u32)> = all
                .iter()
                .filter_map(|r| match r {
                    Ran::Skipped { offset, count } => Some((*offset, count - 1)),
                    Ran::Retry {
                        offset,
                        give_back: Some(count),
                        ..
                    } => Some((*offset, *count)),
                    _ => None,
                })
                .collect();
            self.storage.set_deliveries(&self.binding.name, &undo)?;
        }
        Ok((all, submitted))
    }

    /// Runs one lane's messages in order. A message that will be retried, or parks its key,
    /// holds its key (everything, under `fifo`) for the rest of the lane.
    fn run_lane(&self, jobs: Vec<(Job, u32)>) -> Result<(Vec<Ran>, Vec<Submitted>), StorageError> {
        let b = &self.binding;
        let mut out = Vec::with_capacity(jobs.len());
        let mut submitted = Vec::new();
        let mut gather = Gather::default();
        let mut held_keys: HashSet<String> = HashSet::new();
        let mut all_held = false;
        let mut rng = Jitter::new();
        let mut handler_time = crate::metrics::LocalHistogram::default();
        for (job, count) in jobs {
            if gather.bytes >= GATHER_BYTES {
                submitted.extend(self.flush(&mut gather)?);
            }
            let offset = job.stored.offset;
            let key = job.stored.record.key.clone();
            if all_held || key.as_ref().is_some_and(|k| held_keys.contains(k)) {
                out.push(Ran::Skipped { offset, count });
                continue;
            }
            let mut hold = || match (b.ordering, &key) {
                (Ordering::Fifo, _) => all_held = true,
                (Ordering::Key, Some(k)) => {
                    held_keys.insert(k.clone());
                }
                _ => {}
            };
            let Some(attempt) = Attempt::new(count.max(1)) else {
                unreachable!("counts start at 1")
            };
            if count > b.max_attempts {
                let reason = format!(
                    "delivered {} times without an outcome being recorded (the host stopped while handling it)",
                    count - 1
                );
                let attempts = Attempt::new(count - 1).unwrap_or(attempt);
                if self.parks(&key) {
                    hold();
                    let failure = format!("attempt {attempts}: interrupted: {reason}");
                    tracing::warn!(binding = %b.name, offset = %offset, key = key.as_deref().unwrap_or_default(), "key parked: {failure}");
                    out.push(Ran::Park {
                        offset,
                        failure,
                        attempts: attempts.get(),
                    });
                    continue;
                }
                self.dead_letter(&mut gather, &job, attempts, "interrupted", &reason);
                out.push(Ran::Handled { offset });
                continue;
            }
            if crate::server::replayed_for_another(&job.stored.record, &b.name) {
                // A replay meant for another binding of this source: acknowledged unrun.
                let effects = crate::host::Effects::default();
                self.stage(&mut gather, offset, effects, None, Finished::Skipped);
                out.push(Ran::Handled { offset });
                continue;
            }
            let message = Message::new(&b.source, &job.stored, attempt);
            self.stats.invocations.fetch_add(1, Relaxed);
            // Disabled (the default filter is `info`), a span costs one check of its callsite.
            let span = tracing::debug_span!(
                "invocation",
                message_id = %job.stored.record.id,
                source = %b.source,
                binding = %b.name,
                plugin = %self.handler.plugin(),
                version = self.handler.version(),
                attempt = %attempt,
                offset = %offset,
            );
            let _in_span = span.enter();
            let started = std::time::Instant::now();
            let invocation = self.handler.handle(&message, b.timeout);
            handler_time.observe(started.elapsed());
            let (class, reason, retry) = match invocation.result {
                Ok(outcome @ (Outcome::Ack | Outcome::Reply(_))) => {
                    let (reply, finished) = match outcome {
                        Outcome::Reply(bytes) => {
                            (self.reply(&job.stored, bytes), Finished::Replied)
                        }
                        _ => (None, Finished::Acked),
                    };
                    let refused = self
                        .storage
                        .check_publishes(&invocation.effects.publishes)
                        .and_then(|()| self.storage.check_publishes(reply.as_slice()));
                    if let Err(e) = refused {
                        // One message whose outcome the store cannot hold fails for good (it
                        // would fail the same way every time), like any failure that is not
                        // retried, instead of failing the commit and, with it, the binding.
                        drop(invocation.kv_guard);
                        let reason = format!("its outcome cannot be stored: {e}");
                        tracing::warn!(binding = %b.name, offset = %offset, "uncommittable: {reason}");
                        ("uncommittable".to_owned(), reason, None)
                    } else {
                        if invocation.kv_guard.is_some() || !invocation.effects.kv.is_empty() {
                            // In gate order: what was gathered first, then this commit alone, then
                            // the gate goes.
                            submitted.extend(self.flush(&mut gather)?);
                            let mut own = Gather::default();
                            self.stage(&mut own, offset, invocation.effects, reply, finished);
                            submitted.extend(self.flush(&mut own)?);
                            drop(invocation.kv_guard);
                        } else {
                            self.stage(&mut gather, offset, invocation.effects, reply, finished);
                        }
                        out.push(Ran::Handled { offset });
                        continue;
                    }
                }
                Ok(Outcome::DeadLetter(reason)) => ("dead-letter".to_owned(), reason, None),
                Ok(Outcome::Retry(after)) => {
                    let reason = format!(
                        "handler asked for a retry after the last of {} attempts",
                        b.max_attempts
                    );
                    (
                        "retries-exhausted".to_owned(),
                        reason,
                        Some(after.min(b.backoff.max)),
                    )
                }
                Err(Failure {
                    class,
                    message,
                    retryable,
                }) => {
                    self.stats.failed(class);
                    tracing::warn!(
                        binding = %b.name, plugin = %self.handler.plugin(), offset = %offset,
                        attempt = %attempt, class = %class, "invocation failed: {message}"
                    );
                    if invocation.on_probation && b.guarantee != Guarantee::AtMostOnce {
                        // The version that failed is being judged (and may be rolled back):
                        // the message runs again, on whatever version is active then,
                        // without having used up an attempt.
                        hold();
                        out.push(Ran::Retry {
                            offset,
                            delay: b.backoff.delay(1, rng.unit()),
                            failure: Some(format!(
                                "attempt {attempt}: {class}: {message} (a new plugin version on probation; the attempt does not count)"
                            )),
                            give_back: Some(count - 1),
                        });
                        continue;
                    }
                    let delay = retryable.then(|| b.backoff.delay(count, rng.unit()));
                    (class.to_string(), message, delay)
                }
            };
            let failure = format!("attempt {attempt}: {class}: {reason}");
            match retry {
                Some(delay) if count < b.max_attempts => {
                    hold();
                    let failure = (class != "retries-exhausted").then_some(failure);
                    out.push(Ran::Retry {
                        offset,
                        delay,
                        failure,
                        give_back: None,
                    });
                }
                _ if self.parks(&key) => {
                    hold();
                    tracing::warn!(binding = %b.name, offset = %offset, key = key.as_deref().unwrap_or_default(), "key parked: {failure}");
                    out.push(Ran::Park {
                        offset,
                        failure,
                        attempts: count,
                    });
                }
                _ => {
                    let mut job = job;
                    job.failures.push(failure);
                    self.dead_letter(&mut gather, &job, attempt, &class, &reason);
                    out.push(Ran::Handled { offset });
                }
            }
        }
        submitted.extend(self.flush(&mut gather)?);
        handler_time.flush_into(&self.stats.handler);
        Ok((out, submitted))
    }

    /// Whether a message with `key` that failed for good parks it (instead of going to the
    /// dead-letter queue).
    fn parks(&self, key: &Option<String>) -> bool {
        let b = &self.binding;
        b.ordering == Ordering::Key && b.poison == Poison::Park && key.is_some()
    }

    /// Releases the keys the window holds parked that are no longer parked in the store: each
    /// one's parked message is put back (to run from its first attempt, its delivery count
    /// reset by the unpark), and reading goes back to just after it, so the key's later
    /// messages are read again and follow in order (what is acknowledged or in the window
    /// already is skipped).
    fn release_unparked(
        &self,
        window: &mut Window,
        next_read: &mut Offset,
    ) -> Result<(), StorageError> {
        let b = &self.binding;
        let still: HashSet<String> = park::parked(&*self.storage, &b.name, usize::MAX)
            .into_iter()
            .map(|p| p.key)
            .collect();
        let gone: Vec<String> = window
            .parked()
            .filter(|k| !still.contains(*k))
            .map(str::to_owned)
            .collect();
        for key in gone {
            let Some(offset) = window.unpark(&key) else {
                continue;
            };
            match self.storage.read(&b.source, offset, 1)?.into_iter().next() {
                Some(stored) if stored.offset == offset => window.push(stored),
                _ => {
                    tracing::warn!(binding = %b.name, offset = %offset, key, "the unparked message is no longer stored (retention); the key's later messages go on")
                }
            }
            *next_read = (*next_read).min(offset.next());
            tracing::info!(binding = %b.name, offset = %offset, key, "key unparked");
        }
        self.stats.gauges(window.len(), window.parked_keys());
        Ok(())
    }

    /// Submits what a lane gathered, if anything.
    fn flush(&self, gather: &mut Gather) -> Result<Option<Submitted>, StorageError> {
        if gather.done.is_empty() {
            return Ok(None);
        }
        let Gather { commit, done, .. } = std::mem::take(gather);
        let ticket = self.storage.submit(commit)?;
        Ok(Some(Submitted { ticket, done }))
    }

    /// Adds one message's outcome to a commit: its effects (and reply or dead letter) with its
    /// acknowledgement.
    fn stage(
        &self,
        gather: &mut Gather,
        offset: Offset,
        effects: crate::host::Effects,
        extra: Option<(DestinationName, Record)>,
        finished: Finished,
    ) {
        let b = &self.binding;
        let mut publishes = effects.publishes;
        publishes.extend(extra);
        if b.guarantee == Guarantee::ExactlyOnce {
            // Ids derived from the message: a consumer can tell outputs apart by them, and the
            // store's recovery finds which of a commit's outputs a crash kept.
            for (n, (_, record)) in publishes.iter_mut().enumerate() {
                record.id = format!("{}@{}#{n}", b.name, offset);
            }
        }
        gather.bytes += publishes
            .iter()
            .map(|(_, r)| {
                r.id.len()
                    + r.key.as_ref().map_or(0, String::len)
                    + r.headers
                        .iter()
                        .map(|(n, v)| n.len() + v.len() + 8)
                        .sum::<usize>()
                    + r.payload.len()
                    + 64
            })
            .sum::<usize>()
            + effects
                .kv
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 16)
                .sum::<usize>();
        let c = &mut gather.commit;
        c.publishes.extend(publishes);
        if !effects.kv.is_empty() {
            let plugin = self.handler.plugin().clone();
            c.kv.get_or_insert_with(|| (plugin, Vec::new()))
                .1
                .extend(effects.kv);
        }
        if b.guarantee != Guarantee::AtMostOnce {
            c.acks.push((b.name.clone(), offset));
        }
        gather.done.push((offset, finished));
    }

    /// The reply record for a request, when the message names a reply destination that exists.
    fn reply(&self, stored: &Stored, payload: Vec<u8>) -> Option<(DestinationName, Record)> {
        let to = stored.record.reply_to.as_deref()?;
        let dest = DestinationName::new(to)
            .ok()
            .filter(|d| self.storage.has_log(d));
        let Some(dest) = dest else {
            tracing::warn!(binding = %self.binding.name, reply_to = to, "reply dropped: no such destination");
            return None;
        };
        Some((
            dest,
            Record {
                id: crate::ids::new_message_id(),
                key: None,
                headers: Vec::new(),
                payload,
                timestamp_ms: crate::ids::now_ms(),
                reply_to: None,
                correlation_id: stored.record.correlation_id.clone(),
            },
        ))
    }

    /// Adds the move of a message to the dead-letter queue, with its history, to a commit.
    fn dead_letter(
        &self,
        gather: &mut Gather,
        job: &Job,
        attempts: Attempt,
        class: &str,
        reason: &str,
    ) {
        let b = &self.binding;
        let stored = &job.stored;
        let mut record = (*stored.record).clone();
        // A partition of a binding (`<binding>~p<n>`, on NATS) dead-letters under the
        // binding's own name and source: that is what the dead-letter routes list and redrive.
        let binding = b.name.split_partition().map_or(b.name.clone(), |(n, _)| n);
        let source = b
            .source
            .split_partition()
            .map_or(b.source.clone(), |(d, _)| d);
        record.headers.extend([
            ("weir-dlq-binding".to_owned(), binding.to_string()),
            ("weir-dlq-source".to_owned(), source.to_string()),
            ("weir-dlq-offset".to_owned(), stored.offset.to_string()),
            ("weir-dlq-attempts".to_owned(), attempts.to_string()),
            ("weir-dlq-class".to_owned(), class.to_owned()),
            ("weir-dlq-reason".to_owned(), reason.to_owned()),
            (
                "weir-dlq-history".to_owned(),
                serde_json::to_string(history(&job.failures)).unwrap_or_default(),
            ),
        ]);
        self.stage(
            gather,
            stored.offset,
            crate::host::Effects::default(),
            Some((b.dead_letter.clone(), record)),
            Finished::DeadLettered,
        );
    }
}

/// Attempts a dead letter's history lists at most: the last ones (each failure text is already
/// cut to [`crate::validate::MAX_REASON`]), so that its header stays bounded however many
/// attempts a binding allows.
const HISTORY: usize = 16;

/// The failures a dead letter's history lists.
fn history(failures: &[String]) -> &[String] {
    &failures[failures.len().saturating_sub(HISTORY)..]
}

/// The lane of a key (stable within the process).
fn lane_hash(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// A small xorshift generator for backoff jitter (no need for cryptographic randomness).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = crate::ids::now_ms() ^ (std::process::id() as u64) << 32;
        let local = &seed as *const u64 as u64; // differs per thread stack
        Jitter((seed ^ local.rotate_left(17)) | 1)
    }

    /// A number in `0..1`.
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests;
