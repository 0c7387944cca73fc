//! What the benchmark notes per event: when its publish started and was acknowledged, when
//! and in which order its handler returned, and the binding's durable count over time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::delivery::{BindingStats, Handler};
use crate::host::{Invocation, Message, Outcome, Plugin};
use crate::names::{Offset, PluginName};

/// Per-event timestamps, in nanoseconds since the run's start, indexed by offset from `base`
/// (the queue held `base` prefilled records and nothing else, so the `i`-th event published
/// has offset `base + i`).
pub(super) struct Probe {
    pub(super) started: Instant,
    pub(super) base: Offset,
    pub(super) publish_start: Vec<AtomicU64>,
    pub(super) publish_acked: Vec<AtomicU64>,
    pub(super) returned: Vec<AtomicU64>,
    /// `k` when the event's handler was the `k`-th to return (0: not yet).
    pub(super) rank: Vec<AtomicU64>,
    pub(super) returns: AtomicU64,
}

impl Probe {
    pub(super) fn new(events: u64, base: Offset) -> Probe {
        let zeros = || (0..events).map(|_| AtomicU64::new(0)).collect();
        Probe {
            started: Instant::now(),
            base,
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

    /// The index of the event at `offset`, if it is one of the run's.
    pub(super) fn index(&self, offset: Offset) -> Option<usize> {
        let i = offset.0.checked_sub(self.base.0)? as usize;
        (i < self.rank.len()).then_some(i)
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
            if let Some(i) = p.index(Offset(message.offset())) {
                p.rank[i].store(k, Relaxed);
                p.returned[i].store(at, Relaxed);
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
