//! Counters per binding and per destination, read by the stats API.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::host::FailureClass;
use crate::metrics::Histogram;

/// Every failure class, in the order counters are kept.
pub const CLASSES: [FailureClass; 6] = [
    FailureClass::HandlerError,
    FailureClass::Trap,
    FailureClass::Timeout,
    FailureClass::OutOfMemory,
    FailureClass::OutOfFuel,
    FailureClass::Instantiation,
];

/// Counters of one binding.
#[derive(Debug, Default)]
pub struct BindingStats {
    /// Invocations run (every attempt counts).
    pub invocations: AtomicU64,
    /// Messages acknowledged (including replied).
    pub acked: AtomicU64,
    /// Messages answered with a reply.
    pub replied: AtomicU64,
    /// Attempts that will be retried.
    pub retried: AtomicU64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Replayed copies meant for another binding, acknowledged without running.
    pub skipped: AtomicU64,
    /// Messages read and not finished (handled, waiting, retrying or committing) right now.
    pub in_flight: AtomicU64,
    /// Keys parked right now.
    pub parked_keys: AtomicU64,
    /// Time of each invocation (every attempt), as the engine saw it.
    pub handler: Histogram,
    failures: [AtomicU64; CLASSES.len()],
    /// Whether the binding's task is stopped by an error (waiting to be restarted).
    down: AtomicBool,
    /// Times the binding's task was restarted after an error.
    restarts: AtomicU64,
    /// The last error that stopped the binding's task, with when (ms since the epoch).
    last_error: Mutex<Option<(String, u64)>>,
}

impl BindingStats {
    /// Counts one failure of `class`.
    pub fn failed(&self, class: FailureClass) {
        let i = CLASSES
            .iter()
            .position(|c| *c == class)
            .expect("every class is listed");
        self.failures[i].fetch_add(1, Relaxed);
    }

    /// Records that the binding's task stopped on `error` (it is down until [`Self::restarted`]).
    pub fn stopped(&self, error: String) {
        self.down.store(true, Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some((error, crate::ids::now_ms()));
    }

    /// Records that the binding's task runs again after an error.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Relaxed);
        self.down.store(false, Relaxed);
    }

    /// Whether the binding runs (or is paused on purpose), not stopped by an error.
    pub fn up(&self) -> bool {
        !self.down.load(Relaxed)
    }

    /// Times the binding was restarted after an error.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Relaxed)
    }

    /// Sets the gauges.
    pub(super) fn gauges(&self, in_flight: usize, parked_keys: usize) {
        self.in_flight.store(in_flight as u64, Relaxed);
        self.parked_keys.store(parked_keys as u64, Relaxed);
    }

    /// Counts a message whose commit became durable.
    pub(super) fn finished(&self, how: super::Finished) {
        match how {
            super::Finished::Acked => {
                self.acked.fetch_add(1, Relaxed);
            }
            super::Finished::Replied => {
                self.acked.fetch_add(1, Relaxed);
                self.replied.fetch_add(1, Relaxed);
            }
            super::Finished::DeadLettered => {
                self.dead_lettered.fetch_add(1, Relaxed);
            }
            super::Finished::Skipped => {
                self.skipped.fetch_add(1, Relaxed);
            }
        }
    }

    /// A point-in-time copy.
    pub fn snapshot(&self) -> BindingSnapshot {
        BindingSnapshot {
            invocations: self.invocations.load(Relaxed),
            acked: self.acked.load(Relaxed),
            replied: self.replied.load(Relaxed),
            retried: self.retried.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            parked_keys: self.parked_keys.load(Relaxed),
            failures: CLASSES
                .iter()
                .zip(&self.failures)
                .map(|(c, n)| (c.to_string(), n.load(Relaxed)))
                .collect(),
            up: self.up(),
            restarts: self.restarts(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|(error, at_ms)| LastError {
                    error: error.clone(),
                    at_ms: *at_ms,
                }),
        }
    }
}

/// Serializable binding counters.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BindingSnapshot {
    /// Invocations run.
    pub invocations: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Messages answered with a reply.
    pub replied: u64,
    /// Attempts retried.
    pub retried: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Replayed copies meant for another binding, acknowledged without running.
    #[serde(default)]
    pub skipped: u64,
    /// Messages read and not finished.
    #[serde(default)]
    pub in_flight: u64,
    /// Keys parked.
    #[serde(default)]
    pub parked_keys: u64,
    /// Failures by class.
    pub failures: BTreeMap<String, u64>,
    /// Whether the binding runs: false while it is stopped by an error, waiting to be
    /// restarted.
    #[serde(default = "yes")]
    pub up: bool,
    /// Times it was restarted after an error.
    #[serde(default)]
    pub restarts: u64,
    /// The last error that stopped it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

fn yes() -> bool {
    true
}

/// An error that stopped a binding.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LastError {
    /// What happened.
    pub error: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}
