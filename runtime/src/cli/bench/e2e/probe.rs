//! What the benchmark notes per event: when its publish started and was acknowledged, when
//! and in which order its handler returned, and the binding's durable count over time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::delivery::{BindingStats, Handler};
use crate::host::{Invocation, Message, Outcome, Plugin};
use crate::names::PluginName;

/// Per-event timestamps, in nanoseconds since the run's start, indexed by offset (the queue is
/// new, so the `i`-th stored event has offset `i`).
pub(super) struct Probe {
    pub(super) started: Instant,
    pub(super) publish_start: Vec<AtomicU64>,
    pub(super) publish_acked: Vec<AtomicU64>,
    pub(super) returned: Vec<AtomicU64>,
    /// `k` when the event's handler was the `k`-th to return (0: not yet).
    pub(super) rank: Vec<AtomicU64>,
    pub(super) returns: AtomicU64,
}

impl Probe {
    pub(super) fn new(events: u64) -> Probe {
        let zeros = || (0..events).map(|_| AtomicU64::new(0)).collect();
        Probe {
            started: Instant::now(),
            publish_start: zeros(),
            publish_acked: zeros(),
            returned: zeros(),
            rank: zeros(),
            returns: AtomicU64::new(0),
        }
    }

    pub(super) fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

/// The plugin, noting when and in which order handlers return.
pub(super) struct Timed {
    pub(super) plugin: Arc<Plugin>,
    pub(super) probe: Arc<Probe>,
}

impl Handler for Timed {
    fn plugin(&self) -> &PluginName {
        self.plugin.name()
    }

    fn handle(&self, message: &Message, timeout: Duration) -> Invocation {
        let invocation = Handler::handle(&*self.plugin, message, timeout);
        // Only outcomes that commit an acknowledgement take a place in the commit order.
        if matches!(invocation.result, Ok(Outcome::Ack | Outcome::Reply(_))) {
            let p = &self.probe;
            let at = p.now();
            let k = p.returns.fetch_add(1, Relaxed) + 1;
            if let Some(slot) = p.rank.get(message.offset() as usize) {
                slot.store(k, Relaxed);
                p.returned[message.offset() as usize].store(at, Relaxed);
            }
        }
        invocation
    }
}

/// Samples the binding's durable count every `every` until all events are handled: (time,
/// count) at each change. Fails if the count stops moving for 30 s.
pub(super) fn sample(
    stats: &BindingStats,
    probe: &Probe,
    events: u64,
    every: Duration,
    failed: &AtomicBool,
) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut samples = Vec::new();
    let mut last = 0;
    let mut moved = Instant::now();
    loop {
        let count = stats.acked.load(Relaxed);
        if count != last {
            samples.push((probe.now(), count));
            last = count;
            moved = Instant::now();
        }
        if count >= events {
            return Ok(samples);
        }
        if failed.load(Relaxed) {
            bail!("stopped: a publisher failed");
        }
        if moved.elapsed() > Duration::from_secs(30) {
            bail!("no event was handled for 30 s ({count} of {events} handled)");
        }
        std::thread::sleep(every);
    }
}
