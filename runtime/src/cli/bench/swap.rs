//! `weir bench swap`: hot swaps under steady load. A real store, engine, reloader and file
//! watcher in one process; a `key`-ordered exactly-once binding runs the `tagger` plugin, whose
//! outputs carry its version's tag. After a baseline without swaps, the benchmark swaps the
//! plugin file (written beside it, renamed into place) between two tagged versions, and then to
//! versions with content never seen (so they compile), while events keep flowing at the asked
//! rate. It measures, per swap, the time from the file being complete to the first invocation
//! on the new version, and per event, publish to its output durable and visible; and it checks
//! the outputs: every event's output exactly once, in per-key order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use super::workdir::WorkDir;
use super::{percentile, round3};
use crate::config::Config;
use crate::deploy::{Reloader, Slot};
use crate::host::LoadedFrom;
use crate::names::{DestinationName, Offset};
use crate::server::{PublishRequest, Runtime};

/// `weir bench swap`.
#[derive(Debug, Args)]
pub struct SwapArgs {
    /// Events per second, held through the baseline and the swaps.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of load before the first swap (the baseline latency).
    #[arg(long, default_value_t = 5)]
    baseline_seconds: u64,
    /// Seconds of load during which the swaps between the two versions happen, evenly spaced.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of load, after those, during which the swaps to never-seen versions happen.
    #[arg(long, default_value_t = 5)]
    compiled_seconds: u64,
    /// Swaps between the two tagged versions (both deployed once before the load starts, so
    /// these swaps find them in the precompiled cache).
    #[arg(long, default_value_t = 50)]
    swaps: u32,
    /// Swaps in the last phase, each to a version never seen before (compiled during the
    /// swap).
    #[arg(long, default_value_t = 10)]
    compiled_swaps: u32,
    /// Distinct keys the events are spread over.
    #[arg(long, default_value_t = 64)]
    keys: u64,
    /// The plugin: the `tagger` example, or any plugin with the same `weir-tag:` marker.
    #[arg(long, default_value = "plugins/target/components/tagger.wasm")]
    plugin: PathBuf,
    /// Which tier of the precompiled cache the swaps between the two versions load from:
    /// `memory` (the default configuration, recent versions kept compiled in memory) or
    /// `disk` (`server.compiled_cache_memory = 0`: every such swap reads, verifies and
    /// deserializes the version's precompiled file).
    #[arg(long, value_enum, default_value_t = CacheTier::Memory)]
    cache_tier: CacheTier,
    /// Directory for the run's store (in `<dir>/.weir-bench-swap-XXXXXX`, removed afterwards).
    /// Default: the current directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

const MARKER: &[u8] = b"weir-tag:";

/// `--cache-tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CacheTier {
    Memory,
    Disk,
}

impl CacheTier {
    fn as_str(self) -> &'static str {
        match self {
            CacheTier::Memory => "memory",
            CacheTier::Disk => "disk",
        }
    }
}

pub fn run(args: SwapArgs) -> anyhow::Result<()> {
    if args.rate == 0 || args.seconds == 0 || args.keys == 0 {
        bail!("--rate, --seconds and --keys must be at least 1");
    }
    if args.swaps < 2 {
        bail!("--swaps must be at least 2 (there and back)");
    }
    let original = std::fs::read(&args.plugin).with_context(|| {
        format!(
            "cannot read `{}`; build the example plugins with `scripts/build-plugins` (from the repository root) or pass --plugin",
            args.plugin.display()
        )
    })?;
    let at = tag_position(&original).with_context(|| {
        format!(
            "`{}` has no `weir-tag:` marker; use the `tagger` example plugin",
            args.plugin.display()
        )
    })?;
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    let dir = WorkDir::new("swap", &base)?;
    // Earlier writes of other programs (a build just before, say) flushed during the run would
    // stall its fsyncs: write them out first. Best effort; the run's own writes still count.
    let _ = std::process::Command::new("sync").status();
    let result = measure(&args, &original, at, dir.path());
    drop(dir);
    report(&args, &result?)
}

/// Where the 8 tag bytes are.
fn tag_position(component: &[u8]) -> Option<usize> {
    component
        .windows(MARKER.len())
        .position(|w| w == MARKER)
        .map(|i| i + MARKER.len())
        .filter(|i| i + 8 <= component.len())
}

fn tagged(original: &[u8], at: usize, tag: &[u8; 8]) -> Vec<u8> {
    let mut v = original.to_vec();
    v[at..at + 8].copy_from_slice(tag);
    v
}

struct Swap {
    /// File complete to the first invocation on the new version.
    ms: f64,
    /// File complete to the new version active (swapped in).
    active_ms: f64,
    from: LoadedFrom,
}

struct Measured {
    events: u64,
    /// Per key, the sequence numbers in the order the source stored them (publishes run
    /// concurrently, so this is the order the binding must keep).
    stored: BTreeMap<String, Vec<u64>>,
    elapsed: Duration,
    swaps: Vec<Swap>,
    outputs: Outputs,
}

/// What the outputs showed.
#[derive(Default)]
struct Outputs {
    seen: u64,
    /// Per key, the sequence numbers in output order.
    by_key: BTreeMap<String, Vec<u64>>,
    by_tag: BTreeMap<String, u64>,
    /// Publish (due time) to output visible, in µs, for events due before the first swap.
    baseline_us: Vec<u64>,
    /// The same for events due while the two versions were swapped.
    swapping_us: Vec<u64>,
    /// The same for events due while swapping to new versions (compiling).
    compiling_us: Vec<u64>,
}

fn measure(args: &SwapArgs, original: &[u8], at: usize, dir: &Path) -> anyhow::Result<Measured> {
    let plugin_path = dir.join("plugin.wasm");
    std::fs::write(&plugin_path, tagged(original, at, b"aaaaaaaa"))?;
    let memory = match args.cache_tier {
        CacheTier::Memory => "",
        CacheTier::Disk => "compiled_cache_memory = \"0\"\n",
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{memory}\
         [broker]\nfsync = \"always\"\n\
         [queues.bench]\n[queues.out]\n\
         [plugins.p]\npath = \"plugin.wasm\"\npublish = [\"out\"]\n\
         [[bindings]]\nsource = \"bench\"\nplugin = \"p\"\n\
         guarantee = \"exactly-once\"\nordering = \"key\"\n"
    );
    let config_path = dir.join("weir.toml");
    std::fs::write(&config_path, &text)?;
    let config = Config::parse(&config_path, &text)?;
    let runtime = Arc::new(Runtime::start(config)?);
    let binding = runtime.config.bindings[0].clone();
    let slot = Arc::clone(
        runtime
            .plugins
            .slot(&binding.plugin)
            .context("the plugin")?,
    );
    let stats = Arc::clone(&runtime.bindings[&binding.name]);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consume = tokio.spawn(crate::delivery::run_binding(
        binding,
        Arc::clone(&slot) as Arc<dyn crate::delivery::Handler>,
        Arc::clone(&runtime.storage),
        stats,
        Arc::default(),
        stop_rx,
    ));
    let reloader = Reloader::start(Arc::clone(&runtime.plugins))?;
    // Both versions in the precompiled cache before the load starts, so the swaps between
    // them measure that case (the never-seen versions of the last phase measure compiling).
    for tag in [b"bbbbbbbb", b"aaaaaaaa"] {
        deploy_unmeasured(&slot, dir, &plugin_path, &tagged(original, at, tag))?;
    }

    let baseline = Duration::from_secs(args.baseline_seconds);
    let swapping = Duration::from_secs(args.seconds);
    let events = args.rate * (args.baseline_seconds + args.seconds + args.compiled_seconds);
    let started = Instant::now();
    let failed = Arc::new(AtomicBool::new(false));
    let reader = {
        let rt = Arc::clone(&runtime);
        let failed = Arc::clone(&failed);
        let phases = (
            baseline.as_nanos() as u64,
            (baseline + swapping).as_nanos() as u64,
        );
        tokio.spawn(async move { follow(rt, started, phases, events, failed).await })
    };

    let swaps = std::thread::scope(|s| {
        let swapper = s.spawn(|| {
            // When each swap is due, and to which tag: the two versions in turn, evenly over
            // `seconds`, then never-seen versions evenly over `compiled_seconds`.
            let compiling = Duration::from_secs(args.compiled_seconds);
            let two = (0..args.swaps).map(|j| {
                let due = baseline + swapping / (args.swaps + 1) * (j + 1);
                (
                    due,
                    if j % 2 == 0 { "bbbbbbbb" } else { "aaaaaaaa" }.to_owned(),
                )
            });
            let new = (0..args.compiled_swaps).map(|j| {
                let due = baseline + swapping + compiling / (args.compiled_swaps + 1) * (j + 1);
                (due, format!("c{j:07}"))
            });
            let mut out = Vec::new();
            let mut progress = super::super::progress::Progress::new(
                "swaps",
                u64::from(args.swaps + args.compiled_swaps),
            );
            for (due, tag) in two.chain(new) {
                std::thread::sleep(due.saturating_sub(started.elapsed()));
                let tag: &[u8; 8] = tag.as_bytes().try_into().expect("8 bytes");
                let bytes = tagged(original, at, tag);
                out.push(swap_once(&slot, dir, &plugin_path, &bytes)?);
                progress.set(out.len() as u64);
            }
            progress.finish();
            anyhow::Ok(out)
        });
        publish(&runtime, &tokio, args, events, started, &failed)?;
        swapper.join().expect("the swapper thread")
    })?;
    let outputs = tokio.block_on(reader)??;
    let elapsed = started.elapsed();
    let stored = stored_order(&runtime, events)?;
    let _ = stop_tx.send(true);
    tokio.block_on(consume)??;
    drop(reloader);
    Ok(Measured {
        events,
        stored,
        elapsed,
        swaps,
        outputs,
    })
}

/// Writes `bytes` beside the plugin file and renames it into place. Returns when the file was
/// complete: taken just before the rename, since the reloader may see the rename before this
/// thread runs again.
fn replace(dir: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<Instant> {
    let tmp = dir.join("plugin.wasm.tmp");
    std::fs::write(&tmp, bytes)?;
    let complete = Instant::now();
    std::fs::rename(&tmp, path)?;
    Ok(complete)
}

/// Replaces the plugin file with `bytes`; waits until that version is active.
fn deploy_unmeasured(slot: &Slot, dir: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let hash = crate::host::content_hash(bytes);
    replace(dir, path, bytes)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while slot.plugin().hash() != hash {
        if Instant::now() > deadline {
            bail!("the plugin file was not taken within 60 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Replaces the plugin file with `bytes`; waits for the first invocation on the new version.
fn swap_once(slot: &Slot, dir: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<Swap> {
    let hash = crate::host::content_hash(bytes);
    let complete = replace(dir, path, bytes)?;
    let deadline = complete + Duration::from_secs(30);
    loop {
        let activation = slot.activation();
        // Consecutive versions differ, so the new content active means the new activation.
        if slot.plugin().hash() == hash
            && let Some(first) = activation.first_invocation.get()
        {
            return Ok(Swap {
                ms: first.duration_since(complete).as_secs_f64() * 1e3,
                active_ms: activation
                    .at
                    .saturating_duration_since(complete)
                    .as_secs_f64()
                    * 1e3,
                from: slot.plugin().loaded_from(),
            });
        }
        if Instant::now() > deadline {
            bail!("the new version did not run within 30 s of its file being complete");
        }
        std::thread::sleep(Duration::from_micros(1000));
    }
}

/// Publishes event `i` at its due time, each through `Runtime::publish` on the blocking pool
/// (as the HTTP API does): key `k<i mod keys>`, payload `<key>|<seq>|<due ns>`.
fn publish(
    runtime: &Arc<Runtime>,
    tokio: &tokio::runtime::Runtime,
    args: &SwapArgs,
    events: u64,
    started: Instant,
    failed: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for i in 0..events {
        let due = (u128::from(i) * 1_000_000_000 / u128::from(args.rate)) as u64;
        let now = started.elapsed().as_nanos() as u64;
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        if failed.load(Relaxed) {
            bail!("stopped: a publish failed");
        }
        let key = format!("k{}", i % args.keys);
        let payload = format!("{key}|{}|{due}", i / args.keys).into_bytes();
        let (rt, failed) = (Arc::clone(runtime), Arc::clone(failed));
        tasks.push(tokio.spawn_blocking(move || {
            let request = PublishRequest {
                payload,
                key: Some(key),
                id: None,
                headers: Vec::new(),
            };
            rt.publish("bench", request)
                .inspect_err(|_| failed.store(true, Relaxed))
        }));
    }
    tokio.block_on(async {
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })
}

/// Per key, the sequence numbers of the events in the order the source queue stored them.
fn stored_order(runtime: &Runtime, events: u64) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    let source = DestinationName::new("bench")?;
    let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut next = Offset(0);
    while next.0 < events {
        let stored = runtime.storage.read(&source, next, 4096)?;
        let Some(last) = stored.last() else { break };
        next = last.offset.next();
        for s in &stored {
            let text = String::from_utf8_lossy(&s.record.payload);
            let mut parts = text.split('|');
            let (Some(key), Some(seq)) = (parts.next(), parts.next()) else {
                bail!("unexpected event `{text}`");
            };
            order.entry(key.to_owned()).or_default().push(seq.parse()?);
        }
    }
    Ok(order)
}

/// Follows the output queue until every event's output is there (or none came for 10 s).
async fn follow(
    runtime: Arc<Runtime>,
    started: Instant,
    (baseline_ns, compiling_ns): (u64, u64),
    events: u64,
    failed: Arc<AtomicBool>,
) -> anyhow::Result<Outputs> {
    let out = DestinationName::new("out")?;
    let mut end = runtime.storage.watch_end(&out)?;
    let mut next = Offset(0);
    let mut o = Outputs::default();
    while o.seen < events && !failed.load(Relaxed) {
        let stored = runtime.storage.read(&out, next, 4096)?;
        if stored.is_empty() {
            match tokio::time::timeout(Duration::from_secs(10), end.changed()).await {
                Ok(Ok(())) => continue,
                _ => break, // nothing more is coming
            }
        }
        let now = started.elapsed().as_nanos() as u64;
        for s in stored {
            next = s.offset.next();
            o.seen += 1;
            let text = String::from_utf8_lossy(&s.record.payload).into_owned();
            let parts: Vec<&str> = text.split('|').collect();
            let [tag, key, seq, due] = parts[..] else {
                bail!("unexpected output `{text}`");
            };
            let (seq, due): (u64, u64) = (seq.parse()?, due.parse()?);
            *o.by_tag.entry(tag.to_owned()).or_default() += 1;
            o.by_key.entry(key.to_owned()).or_default().push(seq);
            let us = now.saturating_sub(due) / 1000;
            if due < baseline_ns {
                o.baseline_us.push(us);
            } else if due < compiling_ns {
                o.swapping_us.push(us);
            } else {
                o.compiling_us.push(us);
            }
        }
    }
    Ok(o)
}

fn report(args: &SwapArgs, m: &Measured) -> anyhow::Result<()> {
    let o = &m.outputs;
    // Every stored event's output exactly once, and per key in the order the events were
    // stored.
    let (mut lost, mut duplicates, mut reordered) = (0u64, 0u64, 0u64);
    let published: u64 = m.stored.values().map(|v| v.len() as u64).sum();
    lost += m.events.saturating_sub(published);
    for (key, order) in &m.stored {
        let position: std::collections::HashMap<u64, usize> =
            order.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let seqs = o.by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        let mut seen = vec![false; order.len()];
        let mut highest: Option<usize> = None;
        for s in seqs {
            let Some(&p) = position.get(s) else {
                bail!("output of key {key} has sequence {s}, which was never published");
            };
            if seen[p] {
                duplicates += 1;
            }
            seen[p] = true;
            if highest.is_some_and(|h| p < h) {
                reordered += 1;
            }
            highest = highest.max(Some(p));
        }
        lost += seen.iter().filter(|s| !**s).count() as u64;
    }
    // Swap times in µs, sorted, of the swaps whose version loaded `from` somewhere in `from`.
    let any = [LoadedFrom::Compiled, LoadedFrom::Cache, LoadedFrom::Memory];
    let cache = [LoadedFrom::Cache, LoadedFrom::Memory];
    let times = |from: &[LoadedFrom], time: fn(&Swap) -> f64| {
        let mut v: Vec<u64> = m
            .swaps
            .iter()
            .filter(|s| from.contains(&s.from))
            .map(|s| (time(s) * 1000.0) as u64)
            .collect();
        v.sort_unstable();
        v
    };
    let all = times(&any, |s| s.ms);
    let cached = times(&cache, |s| s.ms);
    let compiled = times(&[LoadedFrom::Compiled], |s| s.ms);
    let cached_active = times(&cache, |s| s.active_ms);
    let from_memory = times(&[LoadedFrom::Memory], |s| s.ms).len();
    let ms = |v: &[u64], p: f64| round3(percentile(v, p) as f64 / 1000.0);
    let sorted = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    let (base, during, compiling) = (
        sorted(&o.baseline_us),
        sorted(&o.swapping_us),
        sorted(&o.compiling_us),
    );
    let p99 = |v: &[u64]| percentile(v, 0.99) as f64 / 1000.0;
    let p50 = |v: &[u64]| percentile(v, 0.5) as f64 / 1000.0;
    let ratio = |v: &[u64]| {
        if p99(&base) > 0.0 {
            round3(p99(v) / p99(&base))
        } else {
            0.0
        }
    };
    let secs = m.elapsed.as_secs_f64();
    println!(
        "{} events at {}/s over {:.1} s, {} swaps ({} from the precompiled cache, {from_memory} of them from its memory tier; {} compiled), versions seen: {}",
        m.events,
        args.rate,
        secs,
        m.swaps.len(),
        cached.len(),
        compiled.len(),
        o.by_tag.len()
    );
    println!(
        "file complete -> first event on the new version: all p50 {:.2} ms p99 {:.2} ms; from cache p50 {:.2} ms p99 {:.2} ms; compiled p50 {:.2} ms p99 {:.2} ms",
        ms(&all, 0.5),
        ms(&all, 0.99),
        ms(&cached, 0.5),
        ms(&cached, 0.99),
        ms(&compiled, 0.5),
        ms(&compiled, 0.99)
    );
    println!(
        "file complete -> new version active (swapped in), from cache: p50 {:.2} ms p99 {:.2} ms",
        ms(&cached_active, 0.5),
        ms(&cached_active, 0.99)
    );
    println!(
        "publish -> output visible: p50 {:.2} ms p99 {:.2} ms without swaps; p50 {:.2} ms p99 {:.2} ms swapping two versions (p99 ratio {}); p50 {:.2} ms p99 {:.2} ms swapping to new versions (p99 ratio {})",
        p50(&base),
        p99(&base),
        p50(&during),
        p99(&during),
        ratio(&during),
        p50(&compiling),
        p99(&compiling),
        ratio(&compiling),
    );
    println!(
        "outputs {}: lost {lost}, duplicates {duplicates}, reordered {reordered}",
        o.seen
    );
    if args.json {
        let out = json!({
            "bench": "swap",
            "rate": args.rate,
            "events": m.events,
            "outputs": o.seen,
            "seconds": round3(secs),
            "swaps": m.swaps.len(),
            "cache_tier": args.cache_tier.as_str(),
            "swaps_from_cache": cached.len(),
            "swaps_from_cache_memory": from_memory,
            "swaps_compiled": compiled.len(),
            "versions_seen": o.by_tag.len(),
            "lost": lost,
            "duplicates": duplicates,
            "reordered": reordered,
            "swap_to_new_version_ms_p50": ms(&all, 0.5),
            "swap_to_new_version_ms_p99": ms(&all, 0.99),
            "cached_swap_to_new_version_ms_p50": ms(&cached, 0.5),
            "cached_swap_to_new_version_ms_p99": ms(&cached, 0.99),
            "cached_swap_to_active_ms_p50": ms(&cached_active, 0.5),
            "cached_swap_to_active_ms_p99": ms(&cached_active, 0.99),
            "compiled_swap_to_new_version_ms_p50": ms(&compiled, 0.5),
            "compiled_swap_to_new_version_ms_p99": ms(&compiled, 0.99),
            "latency_ms_p50_without_swaps": round3(p50(&base)),
            "latency_ms_p99_without_swaps": round3(p99(&base)),
            "latency_ms_p50_during_swaps": round3(p50(&during)),
            "latency_ms_p99_during_swaps": round3(p99(&during)),
            "p99_latency_ratio_during_swaps": ratio(&during),
            "latency_ms_p50_during_compiled_swaps": round3(p50(&compiling)),
            "latency_ms_p99_during_compiled_swaps": round3(p99(&compiling)),
            "p99_latency_ratio_during_compiled_swaps": ratio(&compiling),
        });
        println!("{out}");
    }
    if lost + duplicates + reordered > 0 {
        bail!("outputs lost, doubled or out of order");
    }
    Ok(())
}
