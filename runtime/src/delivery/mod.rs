//! The delivery loop of a binding: read its source from its cursor, invoke the plugin, apply the
//! outcome (ack, reply, retry with backoff, dead-letter) and commit the invocation's effects
//! together with the cursor advance.
//!
//! **Invariant:** an invocation's effects (key-value writes, publishes) are committed only when
//! its outcome is `ack` or `reply`, in the same [`Commit`] as the cursor advance past its message.
//!
//! This is the foundation's delivery: one message at a time per binding, at-least-once. The
//! delivery engine (guarantees, ordering, leases, concurrency) grows here.

mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

pub use stats::{BindingSnapshot, BindingStats};
use tokio::sync::watch;

use crate::config::BindingConfig;
use crate::host::{Effects, Failure, Message, Outcome, Plugin};
use crate::names::Attempt;
use crate::storage::{Commit, Record, Storage, StorageError, Stored};

/// Records read from the source at a time.
const READ_BATCH: usize = 64;
/// Longest backoff between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs one binding until `shutdown` turns true. The message in flight is finished first.
pub async fn run_binding(
    binding: BindingConfig,
    plugin: Arc<Plugin>,
    storage: Arc<dyn Storage>,
    stats: Arc<BindingStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StorageError> {
    let mut end = storage.watch_end(&binding.source)?;
    let mut cursor = storage.cursor(&binding.name);
    let runner = Runner {
        binding,
        plugin,
        storage,
        stats,
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let batch = runner
            .storage
            .read(&runner.binding.source, cursor, READ_BATCH)?;
        if batch.is_empty() {
            tokio::select! {
                changed = end.changed() => if changed.is_err() { return Ok(()) },
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for stored in batch {
            if *shutdown.borrow() {
                return Ok(());
            }
            runner.deliver(&stored, &mut shutdown).await?;
            cursor = stored.offset.next();
        }
    }
}

struct Runner {
    binding: BindingConfig,
    plugin: Arc<Plugin>,
    storage: Arc<dyn Storage>,
    stats: Arc<BindingStats>,
}

impl Runner {
    /// Delivers one message until it is acknowledged or dead-lettered.
    async fn deliver(
        &self,
        stored: &Stored,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), StorageError> {
        if self.storage.is_acked(&self.binding.name, stored.offset) {
            return Ok(()); // acknowledged out of order before a restart
        }
        let mut message = Message::new(&self.binding.source, stored, Attempt::FIRST);
        loop {
            // The attempt number is the durable delivery count: it survives restarts, so a
            // message whose handling kills the host is dead-lettered after `max_attempts`.
            let (storage, plugin, binding) = (
                Arc::clone(&self.storage),
                Arc::clone(&self.plugin),
                self.binding.name.clone(),
            );
            let (offset, max, mut m) = (stored.offset, self.binding.max_attempts, message.clone());
            let stats = Arc::clone(&self.stats);
            // Held for the invocation's time limit plus a margin; the epoch deadline ends the
            // invocation well before the lease does.
            let visibility = self.plugin.limits().timeout + Duration::from_secs(5);
            let started = tokio::task::spawn_blocking(move || {
                let count = storage.lease(&binding, offset, visibility)?;
                let attempt = Attempt::new(count).expect("delivery counts start at 1");
                if count > max {
                    return Ok::<_, StorageError>((attempt, None));
                }
                m.set_attempt(attempt);
                stats.invocations.fetch_add(1, Relaxed);
                Ok((attempt, Some(plugin.invoke(&m))))
            })
            .await
            .expect("plugin invocations do not panic")?;
            let (attempt, invocation) = started;
            let Some(invocation) = invocation else {
                let reason = format!(
                    "delivered {} times without an outcome being recorded (the host stopped while handling it)",
                    attempt.get() - 1
                );
                return self.dead_letter(
                    stored,
                    Attempt::new(attempt.get() - 1).unwrap_or(attempt),
                    "interrupted",
                    &reason,
                );
            };
            let delay = match invocation.result {
                // Counters move only once the commit is durable.
                Ok(Outcome::Ack) => {
                    self.commit(stored, invocation.effects, Vec::new())?;
                    self.stats.acked.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Ok(Outcome::Reply(bytes)) => {
                    let reply = self.reply(stored, bytes);
                    self.commit(stored, invocation.effects, reply.into_iter().collect())?;
                    self.stats.acked.fetch_add(1, Relaxed);
                    self.stats.replied.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Ok(Outcome::DeadLetter(reason)) => {
                    return self.dead_letter(stored, attempt, "dead-letter", &reason);
                }
                Ok(Outcome::Retry(after)) => {
                    if attempt.get() >= self.binding.max_attempts {
                        let reason = format!(
                            "handler asked for a retry after the last of {} attempts",
                            self.binding.max_attempts
                        );
                        return self.dead_letter(stored, attempt, "retries-exhausted", &reason);
                    }
                    after.min(MAX_BACKOFF)
                }
                Err(Failure {
                    class,
                    message: reason,
                    retryable,
                }) => {
                    self.stats.failed(class);
                    tracing::warn!(
                        binding = %self.binding.name, plugin = %self.plugin.name(), offset = %stored.offset,
                        attempt = %attempt, class = %class, "invocation failed: {reason}"
                    );
                    if !retryable || attempt.get() >= self.binding.max_attempts {
                        return self.dead_letter(stored, attempt, &class.to_string(), &reason);
                    }
                    backoff(self.binding.retry_delay, attempt)
                }
            };
            self.stats.retried.fetch_add(1, Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return Ok(()),
            }
            message.set_attempt(attempt.next());
        }
    }

    fn commit(
        &self,
        stored: &Stored,
        effects: Effects,
        mut extra: Vec<(crate::names::DestinationName, Record)>,
    ) -> Result<(), StorageError> {
        let mut publishes = effects.publishes;
        publishes.append(&mut extra);
        let kv = (!effects.kv.is_empty())
            .then(|| (self.plugin.name().clone(), effects.kv.into_iter().collect()));
        let commit = Commit {
            kv,
            publishes,
            ack: Some((self.binding.name.clone(), stored.offset)),
        };
        // A durable commit waits for fsync: let the runtime move other tasks off this worker.
        tokio::task::block_in_place(|| self.storage.commit(commit))?;
        Ok(())
    }

    /// The reply record for a request, when the message names a reply destination that exists.
    fn reply(
        &self,
        stored: &Stored,
        payload: Vec<u8>,
    ) -> Option<(crate::names::DestinationName, Record)> {
        let to = stored.record.reply_to.as_deref()?;
        let dest = crate::names::DestinationName::new(to)
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

    fn dead_letter(
        &self,
        stored: &Stored,
        attempt: Attempt,
        class: &str,
        reason: &str,
    ) -> Result<(), StorageError> {
        let mut record = (*stored.record).clone();
        record.headers.extend([
            ("weir-dlq-binding".to_owned(), self.binding.name.to_string()),
            (
                "weir-dlq-source".to_owned(),
                self.binding.source.to_string(),
            ),
            ("weir-dlq-offset".to_owned(), stored.offset.to_string()),
            ("weir-dlq-attempts".to_owned(), attempt.to_string()),
            ("weir-dlq-class".to_owned(), class.to_owned()),
            ("weir-dlq-reason".to_owned(), reason.to_owned()),
        ]);
        self.commit(
            stored,
            Effects::default(),
            vec![(self.binding.dead_letter.clone(), record)],
        )?;
        self.stats.dead_lettered.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// Delay before attempt `attempt + 1`: `initial * 2^(attempt-1)`, capped.
fn backoff(initial: Duration, attempt: Attempt) -> Duration {
    let factor = 1u32 << (attempt.get() - 1).min(16);
    initial.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let a = |n| Attempt::new(n).unwrap();
        assert_eq!(
            backoff(Duration::from_millis(100), a(1)),
            Duration::from_millis(100)
        );
        assert_eq!(
            backoff(Duration::from_millis(100), a(3)),
            Duration::from_millis(400)
        );
        assert_eq!(backoff(Duration::from_millis(100), a(30)), MAX_BACKOFF);
    }
}
