//! `weir bench ...`: benchmarks that print human lines and, with `--json`, one JSON object as the
//! last line. Run them from the repository root after `scripts/build-plugins`.

mod aggregate;
mod append;
mod e2e;
mod invoke;
pub(super) mod publish;
mod streams;
mod swap;
pub(super) mod workdir;

use clap::Subcommand;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Per-call cost of a warm plugin instance handling one message.
    Invoke(invoke::InvokeArgs),
    /// Durable appends from concurrent publishers, against the disk's own ceiling.
    Append(append::AppendArgs),
    /// Events from publish to durably handled by a plugin, in one process over the real path.
    E2e(e2e::E2eArgs),
    /// Appends with `exact` expected revisions to a stream store, over Zipf-chosen streams.
    Streams(streams::StreamsArgs),
    /// Aggregate commands (load, decide, append, answer) at a fixed rate, and the cost of
    /// loading a long stream's state from a snapshot.
    Aggregate(aggregate::AggregateArgs),
    /// Hot swaps of a plugin under steady load on an exactly-once, key-ordered binding.
    Swap(swap::SwapArgs),
    /// Publishes over the network (HTTP, keep-alive connections) to a running server or to a
    /// `weir run` child, as a remote client sees it.
    Publish(publish::PublishArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Invoke(args) => invoke::run(args),
        BenchCommand::Append(args) => append::run(args),
        BenchCommand::E2e(args) => e2e::run(args),
        BenchCommand::Swap(args) => swap::run(args),
        BenchCommand::Streams(args) => streams::run(args),
        BenchCommand::Aggregate(args) => aggregate::run(args),
        BenchCommand::Publish(args) => publish::run(args),
    }
}

pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Percentile `p` (0..=1) of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// This process's resident memory, in MiB, from /proc (None elsewhere).
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// Latencies in whole microseconds, 0..=100 ms (slower ones count as 100 ms), in fixed memory
/// shared by every publisher, so measuring does not grow with the run.
struct Histogram {
    buckets: Vec<std::sync::atomic::AtomicU64>,
}

impl Histogram {
    const MAX_US: usize = 100_000;

    fn new() -> Histogram {
        Histogram {
            buckets: (0..=Self::MAX_US)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    fn record(&self, us: u64) {
        let i = (us as usize).min(Self::MAX_US);
        self.buckets[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The smallest latency at or below which a fraction `p` of the samples lie.
    fn percentile(&self, p: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let want = ((total as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (us, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= want {
                return us as u64;
            }
        }
        Self::MAX_US as u64
    }
}
