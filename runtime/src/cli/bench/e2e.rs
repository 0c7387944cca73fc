//! `weir bench e2e`: events from publish to durably handled, in one process over the real
//! path. The store is opened and the plugin loaded as `weir run` does (the steps of
//! [`crate::server::Runtime::start`], with a file system that counts fsyncs); each publisher
//! appends one event at a time with the dedup append [`crate::server::Runtime::publish`] uses,
//! under a fresh id as a publish without `weir-id` gets, and waits for its durable
//! acknowledgement; [`crate::delivery::run_binding`] consumes the queue with the binding's
//! guarantee. Left out: HTTP and request validation. Publishers await the acknowledgement
//! (`--publish async`, the default) or block a thread on it (`--publish blocking`, as the HTTP
//! API does today on its blocking pool).
//!
//! What is measured, per event: from the start of its publish call to the moment the delivery
//! engine has seen its commit durable (the binding counts it `acked` and lets it leave its
//! window; that can be later than the fsync itself, and the difference is part of what is
//! measured). The engine reports no per-message moment, so the benchmark wraps the plugin in a
//! [`Handler`] that notes the order in which handlers return, and samples the binding's `acked`
//! counter: a handler's commit is submitted right after it returns, commits become durable in
//! the order they were submitted (one state journal), and the engine counts them as it sees
//! them durable, so the event whose handler returned `k`-th is handled once the counter reaches
//! `k`. The counter is sampled every 100 µs in latency mode (every millisecond in throughput
//! mode), which bounds the resolution.
//!
//! Throughput mode (no `--rate`): publishers publish as fast as they are acknowledged;
//! `events_per_sec` is the events handled over the time from the first publish to the last
//! event handled. Latency mode (`--rate R`): event `i` is published at `i / R` s, however many
//! publishes are still waiting, and the per-event latencies are reported.
//!
//! `--prefill N` fills the logs with `N` records the binding never consumes before measuring
//! (see [`prefill`]), so the run shows what a long log costs; `--prefill A,B,...` measures once
//! per value, each in a fresh store, and compares the largest prefill's figures with the
//! smallest's.

mod nats;
mod network;
mod prefill;
mod probe;
mod publishers;
mod report;
mod setup;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::workdir::WorkDir;
use crate::config::{Config, Guarantee};
use crate::delivery::BindingStats;
use crate::names::{DestinationName, Offset};
use crate::storage::Storage;
use probe::{Probe, Timed, sample};
use publishers::Publishers;
use setup::{Setup, config};

/// `weir bench e2e`.
#[derive(Debug, Args)]
pub struct E2eArgs {
    /// The binding's guarantee: `at-least-once`, `exactly-once` or `at-most-once`.
    #[arg(long, default_value = "at-least-once")]
    guarantee: Guarantee,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Events to publish. Default: 500,000 without `--rate`, `rate × seconds` with it.
    #[arg(long)]
    events: Option<u64>,
    /// Publish at this held rate (events per second) and report per-event latency.
    #[arg(long)]
    rate: Option<u64>,
    /// With `--rate` and without `--events`: how long to hold the rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent publishers in throughput mode, each publishing one event and waiting for its
    /// durable acknowledgement. (With `--rate`, every event is published at its due time,
    /// however many are still waiting.)
    #[arg(long, default_value_t = 256)]
    publishers: usize,
    /// How a publisher waits for the acknowledgement: `async` (a task awaiting the append, as
    /// `weir bench append` does) or `blocking` (a thread blocked in `Storage::append_dedup`, as
    /// the HTTP API's publishes do today on its blocking pool).
    #[arg(long, value_enum, default_value = "async")]
    publish: PublishMode,
    /// Publish every event before the binding starts, so that only consumption is measured
    /// (`events_per_sec` then counts from the binding's start).
    #[arg(long)]
    backlog: bool,
    /// The plugin handling the events. Default: the trivial example plugin `noop`, or with
    /// `--effects` the `counter` example.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Give every event effects: it carries header `forward-to: out`, and the plugin (by
    /// default the `counter` example) increments a key-value counter and publishes the payload
    /// to the queue `out`, the work `weir chaos --scenario deliver` checks. Without it the
    /// plugin has no effects, so `exactly-once` and `at-least-once` commit the same records.
    #[arg(long)]
    effects: bool,
    /// The binding's `concurrency` (default: the config default).
    #[arg(long)]
    concurrency: Option<u32>,
    /// Before measuring, fill the source queue with this many records that the binding never
    /// consumes (its cursor is moved past them), and with `--effects` the output queue `out`
    /// too (exactly-once publishes search its id indexes for duplicates); the fill is not
    /// measured. A comma-separated list (`1000000,10000000`) measures once per value, each in a
    /// fresh store, and reports every run and the ratio of the largest prefill's figures to
    /// the smallest's. Writes about `N × (prefill-payload-bytes + 85)` bytes per filled queue:
    /// 10 M records of 100 B take about 1.9 GB each.
    #[arg(long, value_delimiter = ',', value_name = "N[,N...]")]
    prefill: Vec<u64>,
    /// Payload bytes of each prefill record. Small records give the log as many records,
    /// segments (a segment is sealed at 262,144 records or 256 MiB) and id-index entries as
    /// events do, in less disk and time.
    #[arg(long, default_value_t = 100)]
    prefill_payload_bytes: usize,
    /// Directory to work in (default: the current one, so the benchmark measures the disk the
    /// project lives on); the store goes in `<dir>/.weir-bench-e2e-XXXXXX`, removed afterwards
    /// (also on Ctrl-C or SIGTERM).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Through the network: start a `weir run` with the run's config, publish over its
    /// streaming publish (the fast path: one WebSocket, `--publishers` messages unacknowledged,
    /// or each event at its due time with `--rate`), and follow the binding's durable cursor in
    /// its `/v1/stats` (see `e2e/network.rs`). Without it, the store and plugin run in this
    /// process and publishing skips HTTP.
    #[arg(long)]
    network: bool,
    /// `nats`: measure, in one run, weir on a 3-node NATS JetStream cluster (two `weir run`
    /// hosts, started by this command with the cluster), the embedded store through the same
    /// publisher (as `--network`), and raw JetStream publish + consume with the same size and
    /// window, the backend's ceiling (see `e2e/nats.rs`). Needs `/usr/sbin/nats-server`
    /// (installed with apt-get when missing). Default events then: 60,000.
    #[arg(long, value_enum, default_value = "embedded")]
    broker: Broker,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

impl E2eArgs {
    fn plugin(&self) -> &Path {
        self.plugin.as_deref().expect("set by run")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Broker {
    Embedded,
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PublishMode {
    Async,
    Blocking,
}

pub fn run(mut args: E2eArgs) -> anyhow::Result<()> {
    let plugin = args.plugin.get_or_insert_with(|| {
        let name = if args.effects { "counter" } else { "noop" };
        PathBuf::from(format!("plugins/target/components/{name}.wasm"))
    });
    if !plugin.is_file() {
        bail!(
            "plugin `{}` not found; build the example plugins with `scripts/build-plugins` (from the repository root) or pass --plugin",
            plugin.display()
        );
    }
    let events = match (args.events, args.rate) {
        (Some(n), _) => n,
        (None, None) if args.broker == Broker::Nats => 60_000,
        (None, None) => 500_000,
        (None, Some(rate)) => rate.saturating_mul(args.seconds),
    };
    if events == 0 || args.publishers == 0 || args.rate == Some(0) {
        bail!("--events, --rate, --seconds and --publishers must be at least 1");
    }
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    if args.broker == Broker::Nats {
        return nats::run(&args, events, &base);
    }
    if args.network {
        return network::run(&args, events, &base);
    }
    let prefills = if args.prefill.is_empty() {
        vec![0]
    } else {
        args.prefill.clone()
    };
    let mut runs = Vec::with_capacity(prefills.len());
    for (i, &prefill) in prefills.iter().enumerate() {
        if prefills.len() > 1 {
            println!(
                "== run {} of {}: prefill {prefill} records",
                i + 1,
                prefills.len()
            );
        }
        let dir = WorkDir::new("e2e", &base)?;
        let m = measure(&args, events, prefill, dir.path())?;
        drop(dir);
        report::human(&args, &m);
        runs.push(m);
    }
    report::compare(&runs);
    if args.json {
        println!("{}", report::json(&args, &runs));
    }
    Ok(())
}

/// What a run measured, in nanoseconds unless named otherwise.
struct Measured {
    /// Records in the source log (and `out`) before the run.
    prefill: u64,
    events: u64,
    /// When a fifth, two fifths, ... of the events had been handled.
    timeline: Vec<(u64, u64)>,
    elapsed_ns: u64,
    publish_span_ns: u64,
    /// Publish start to handled durably, sorted.
    latency: Vec<u64>,
    /// Publish start to its durable acknowledgement, sorted.
    publish: Vec<u64>,
    /// Publish acknowledged to handler returned, sorted.
    to_handler: Vec<u64>,
    /// Handler returned to its commit observed durable, sorted.
    to_durable: Vec<u64>,
    cpu_seconds: Option<f64>,
    /// Fsyncs of files during the measured part.
    fsyncs: u64,
}

fn measure(args: &E2eArgs, events: u64, prefill: u64, dir: &Path) -> anyhow::Result<Measured> {
    let text = config(args)?;
    let config_path = dir.join("weir.toml");
    std::fs::write(&config_path, &text)?;
    let config = Config::parse(&config_path, &text)?;
    let setup = Setup::start(&config)?;
    let binding = config.bindings[0].clone();
    if prefill > 0 {
        let mut logs = vec![setup.source.clone()];
        if args.effects {
            logs.push(DestinationName::new("out")?);
        }
        prefill::fill(&setup.storage, &logs, prefill, args.prefill_payload_bytes)?;
        setup
            .storage
            .advance_cursor(&binding.name, Offset(prefill))?;
        // The fill's writes are durable; other programs' dirty pages flushed during the run
        // would stall its fsyncs. Best effort.
        let _ = std::process::Command::new("sync").status();
    }
    let stats = Arc::new(BindingStats::default());
    let probe = Arc::new(Probe::new(events, Offset(prefill)));
    let handler = Arc::new(Timed {
        plugin: Arc::clone(&setup.plugin),
        probe: Arc::clone(&probe),
    });
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let storage: Arc<dyn Storage> = setup.storage.clone();
    let consume = crate::delivery::run_binding(
        binding,
        handler,
        storage,
        Arc::clone(&stats),
        Arc::default(),
        stop_rx,
    );
    let publishers = Publishers {
        log: setup
            .storage
            .log(&setup.source)
            .context("the bench queue")?,
        storage: Arc::clone(&setup.storage),
        source: setup.source.clone(),
        probe: Arc::clone(&probe),
        payload: vec![b'x'; args.payload_bytes],
        headers: if args.effects {
            vec![("forward-to".to_owned(), "out".to_owned())]
        } else {
            Vec::new()
        },
        events,
        failed: AtomicBool::new(false),
        next: AtomicU64::new(0),
    };
    let publishers = Arc::new(publishers);

    if args.backlog {
        publishers.run(&tokio, args)?;
    }
    let cpu_before = cpu_seconds();
    let syncs_before = setup.io.syncs();
    let began = probe.now();
    let consumer = tokio.spawn(consume);
    let every = if args.rate.is_some() {
        Duration::from_micros(100)
    } else {
        Duration::from_millis(1)
    };
    let measured = AtomicBool::new(false);
    let sampled = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample(&stats, &probe, events, every, &publishers.failed));
        // Progress on stderr, five times a second: off the measured threads' way.
        s.spawn(|| {
            super::super::progress::follow("handled", events, &measured, || {
                stats.acked.load(Relaxed)
            });
        });
        let published = if args.backlog {
            Ok(())
        } else {
            publishers.run(&tokio, args)
        };
        if published.is_err() {
            publishers.failed.store(true, Relaxed);
        }
        let sampled = sampler.join().expect("sampler thread");
        measured.store(true, Relaxed);
        published.and(sampled)
    });
    let cpu = cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    let fsyncs = setup.io.syncs() - syncs_before;
    let _ = stop_tx.send(true);
    let stopped = tokio.block_on(consumer);
    let samples = sampled?;
    stopped.context("binding task")??;
    let snapshot = stats.snapshot();
    if snapshot.failures.values().any(|n| *n > 0) || snapshot.dead_lettered > 0 {
        bail!("the plugin failed during the benchmark: {snapshot:?}");
    }

    let mut m = analyse(args, &probe, &samples, began)?;
    m.prefill = prefill;
    m.cpu_seconds = cpu;
    m.fsyncs = fsyncs;
    Ok(m)
}

/// Per event, from the probe and the samples of the durable count: latencies, and when the
/// events were handled.
fn analyse(
    args: &E2eArgs,
    probe: &Probe,
    samples: &[(u64, u64)],
    began: u64,
) -> anyhow::Result<Measured> {
    let events = probe.rank.len() as u64;
    // Per event: handled when the durable count first reached its rank.
    let handled_at = |rank: u64| {
        let i = samples.partition_point(|(_, count)| *count < rank);
        samples.get(i).map(|(t, _)| *t)
    };
    let at = |v: &[AtomicU64], o: usize| v[o].load(Relaxed);
    let mut latency = Vec::with_capacity(events as usize);
    let (mut publish, mut to_handler, mut to_durable) =
        (latency.clone(), latency.clone(), latency.clone());
    let mut last_handled = 0;
    for o in 0..events as usize {
        let Some(done) = handled_at(at(&probe.rank, o)) else {
            bail!("event at offset {o} was never observed handled");
        };
        let (start, acked, ret) = (
            at(&probe.publish_start, o),
            at(&probe.publish_acked, o),
            at(&probe.returned, o),
        );
        last_handled = last_handled.max(done);
        latency.push(done.saturating_sub(start));
        publish.push(acked.saturating_sub(start));
        to_handler.push(ret.saturating_sub(acked));
        to_durable.push(done.saturating_sub(ret));
    }
    let starts = || (0..events as usize).map(|o| at(&probe.publish_start, o));
    let first = starts().min().unwrap_or(0);
    let last_start = starts().max().unwrap_or(0);
    for v in [&mut latency, &mut publish, &mut to_handler, &mut to_durable] {
        v.sort_unstable();
    }
    let zero = if args.backlog { began } else { first };
    let step = events.div_ceil(5);
    let timeline = (1..=5)
        .map(|k| (k * step).min(events))
        .filter_map(|mark| handled_at(mark).map(|t| (mark, t.saturating_sub(zero))))
        .collect();
    Ok(Measured {
        prefill: 0,
        events,
        timeline,
        elapsed_ns: last_handled - zero,
        publish_span_ns: last_start - first,
        latency,
        publish,
        to_handler,
        to_durable,
        cpu_seconds: None,
        fsyncs: 0,
    })
}

/// CPU time (user + system) this process used so far, from /proc (None elsewhere). Assumes the
/// usual 100 clock ticks per second.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
