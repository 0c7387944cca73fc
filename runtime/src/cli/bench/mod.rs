//! `weir bench ...`: benchmarks that print human lines and, with `--json`, one JSON object as the
//! last line. Run them from the repository root after `scripts/build-plugins`.

mod append;
mod invoke;

use clap::Subcommand;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Per-call cost of a warm plugin instance handling one message.
    Invoke(invoke::InvokeArgs),
    /// Durable appends from concurrent publishers, against the disk's own ceiling.
    Append(append::AppendArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Invoke(args) => invoke::run(args),
        BenchCommand::Append(args) => append::run(args),
    }
}

fn round3(x: f64) -> f64 {
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
