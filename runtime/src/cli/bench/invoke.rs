//! `weir bench invoke`: the per-call cost of a warm plugin instance, and what loading the
//! plugin costs (compiling it, and loading it again from the precompiled cache).
//!
//! Any plugin works: the message is an order (`{"order_id", "customer", "amount", "note"}`,
//! padded by `note` to `--payload-bytes`), the example every language implements (see
//! `docs/languages.md`), and the plugin may publish to the `--publish` destinations and use
//! its key-value state. Effects are buffered as in `weir run` and dropped after each call, not
//! committed: storage is not part of the figure, and every call sees the same state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::workdir::WorkDir;
use crate::config::Limits;
use crate::host::{Host, HostOptions, LoadedFrom, Message, Outcome, Plugin, PluginSpec};
use crate::names::{Attempt, DestinationName, Offset, PluginName};
use crate::storage::{MemoryStorage, Record, Storage, Stored};

/// `weir bench invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The component to call (default: the trivial example plugin).
    #[arg(long, default_value = "plugins/target/components/noop.wasm")]
    plugin: PathBuf,
    /// Payload size in bytes (an order message, padded).
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Destinations the plugin may publish to (repeatable).
    #[arg(long, default_values_t = ["orders.enriched".to_owned()])]
    publish: Vec<String>,
    /// The plugin's memory limit, e.g. `256MiB`.
    #[arg(long, default_value = "64MiB", value_parser = crate::config::ByteSize::parse)]
    memory: crate::config::ByteSize,
    /// Measured calls.
    #[arg(long, default_value_t = 200_000)]
    calls: usize,
    /// Calls before measuring.
    #[arg(long, default_value_t = 20_000)]
    warmup: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InvokeArgs) -> anyhow::Result<()> {
    invoke(args)
}

fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    if !args.plugin.is_file() {
        bail!(
            "plugin `{}` not found; build the example plugins with `scripts/build-plugins` (from the repository root) or pass --plugin",
            args.plugin.display()
        );
    }
    if args.calls == 0 {
        bail!("--calls must be at least 1");
    }
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let source = DestinationName::new("bench")?;
    storage.open_log(&source)?;
    let mut publish = std::collections::BTreeSet::new();
    for name in &args.publish {
        let dest = DestinationName::new(name)?;
        storage.open_log(&dest)?;
        publish.insert(dest);
    }
    let spec = PluginSpec {
        name: PluginName::new("bench")?,
        path: args.plugin.clone(),
        limits: Limits {
            memory_bytes: args.memory.0,
            ..Limits::default()
        },
        publish,
        max_message_size: 1 << 20,
        instances: 1,
    };
    let (plugin, loads) = load_twice(spec, storage)?;
    let record = Record {
        id: crate::ids::new_message_id(),
        key: Some("customer-42".to_owned()),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        payload: order(args.payload_bytes),
        timestamp_ms: crate::ids::now_ms(),
        reply_to: None,
        correlation_id: None,
    };
    let stored = Stored {
        offset: Offset(0),
        record: Arc::new(record),
    };
    let message = Message::new(&source, &stored, Attempt::FIRST);

    let outcome = check(plugin.invoke(&message).result)?;
    for _ in 0..args.warmup {
        check(plugin.invoke(&message).result)?;
    }
    let mut samples = Vec::with_capacity(args.calls);
    let started = Instant::now();
    for _ in 0..args.calls {
        let t = Instant::now();
        let result = plugin.invoke(&message).result;
        samples.push(t.elapsed().as_nanos() as u64);
        check(result)?;
    }
    let total = started.elapsed();
    samples.sort_unstable();
    let pct = |p: f64| super::percentile(&samples, p) as f64 / 1000.0;
    let mean = total.as_secs_f64() * 1e6 / args.calls as f64;
    let (p50, p99) = (pct(0.50), pct(0.99));
    let size = std::fs::metadata(&args.plugin)?.len();
    println!("plugin:        {} ({size} bytes)", args.plugin.display());
    println!(
        "load:          compile {:.1} ms, from the precompiled cache {:.1} ms (first instance included)",
        ms(loads.compiled),
        ms(loads.cached)
    );
    println!(
        "payload:       {} bytes (an order), outcome {outcome}, {} calls after {} warm-up calls",
        args.payload_bytes, args.calls, args.warmup
    );
    println!(
        "per call:      p50 {p50:.3} us, p99 {p99:.3} us, mean {mean:.3} us (each call timed on its own)"
    );
    println!(
        "engine:        cranelift opt speed, pooling allocator, epoch interruption on, fuel off, component-model async off, warm instance reused"
    );
    if args.json {
        let out = serde_json::json!({
            "scenario": "invoke",
            "plugin": args.plugin.display().to_string(),
            "component_bytes": size,
            "compile_ms": super::round3(ms(loads.compiled)),
            "cached_load_ms": super::round3(ms(loads.cached)),
            "outcome": outcome,
            "payload_bytes": args.payload_bytes,
            "calls": args.calls,
            "us_per_call_p50": super::round3(p50),
            "us_per_call_p99": super::round3(p99),
            "us_per_call_mean": super::round3(mean),
            "engine": {
                "cranelift_opt_level": "speed",
                "allocator": "pooling",
                "epoch_interruption": true,
                "fuel": false,
                "component_model_async": false,
                "instance_reuse": true,
            },
        });
        println!("{out}");
    }
    Ok(())
}

/// What loading the plugin cost.
struct Loads {
    /// Compiling the component (and writing the precompiled cache).
    compiled: Duration,
    /// Loading it from the precompiled cache, as a restart does.
    cached: Duration,
}

/// Loads the plugin twice with a fresh precompiled cache: compiled, then from the cache.
/// Returns the second, warm plugin.
fn load_twice(spec: PluginSpec, storage: Arc<dyn Storage>) -> anyhow::Result<(Plugin, Loads)> {
    let dir = WorkDir::new("invoke", &std::env::temp_dir())?;
    let cache = dir.path().join("cache");
    let load = |expected: LoadedFrom| -> anyhow::Result<(Plugin, Duration)> {
        let host = Host::new(HostOptions::default().cache_dir(&cache))?;
        let started = Instant::now();
        let plugin = host
            .load(spec.clone(), Arc::clone(&storage))
            .context("loading the plugin")?;
        let took = started.elapsed();
        if plugin.loaded_from() != expected {
            bail!(
                "expected the plugin to load from {expected:?}, it loaded from {:?}",
                plugin.loaded_from()
            );
        }
        Ok((plugin, took))
    };
    let (_, compiled) = load(LoadedFrom::Compiled)?;
    let (plugin, cached) = load(LoadedFrom::Cache)?;
    Ok((plugin, Loads { compiled, cached }))
}

/// An order message of `size` bytes (at least the bare order): `note` pads it.
fn order(size: usize) -> Vec<u8> {
    let bare = r#"{"order_id":"o-1","customer":"customer-42","amount":1250"#;
    let note = r#","note":""}"#.len();
    if size < bare.len() + note {
        return format!("{bare}}}").into_bytes();
    }
    let pad = "x".repeat(size - bare.len() - note);
    format!(r#"{bare},"note":"{pad}"}}"#).into_bytes()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The outcome's name, or an error when the plugin failed.
fn check(result: Result<Outcome, crate::host::Failure>) -> anyhow::Result<&'static str> {
    match result {
        Ok(Outcome::Ack) => Ok("ack"),
        Ok(Outcome::Retry(_)) => Ok("retry"),
        Ok(Outcome::DeadLetter(_)) => Ok("dead-letter"),
        Ok(Outcome::Reply(_)) => Ok("reply"),
        Err(f) => bail!("the plugin failed during the benchmark: {f}"),
    }
}
