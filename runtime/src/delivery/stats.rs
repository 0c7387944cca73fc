//! Counters per binding and per destination, read by the stats API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::host::FailureClass;

const CLASSES: [FailureClass; 6] = [
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
    failures: [AtomicU64; CLASSES.len()],
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

    /// A point-in-time copy.
    pub fn snapshot(&self) -> BindingSnapshot {
        BindingSnapshot {
            invocations: self.invocations.load(Relaxed),
            acked: self.acked.load(Relaxed),
            replied: self.replied.load(Relaxed),
            retried: self.retried.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            failures: CLASSES
                .iter()
                .zip(&self.failures)
                .map(|(c, n)| (c.to_string(), n.load(Relaxed)))
                .collect(),
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
    /// Failures by class.
    pub failures: BTreeMap<String, u64>,
}
