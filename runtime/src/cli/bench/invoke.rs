//! `weir bench invoke`: the per-call cost of a warm plugin instance.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;

use crate::config::Limits;
use crate::host::{Host, HostOptions, Message, PluginSpec};
use crate::names::{Attempt, DestinationName, Offset, PluginName};
use crate::storage::{MemoryStorage, Record, Storage, Stored};

/// `weir bench invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The component to call (default: the trivial example plugin).
    #[arg(long, default_value = "plugins/target/components/noop.wasm")]
    plugin: PathBuf,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
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
    let host = Host::new(HostOptions::default().max_instances(8))?;
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let source = DestinationName::new("bench")?;
    storage.open_log(&source)?;
    let spec = PluginSpec {
        name: PluginName::new("bench")?,
        path: args.plugin.clone(),
        limits: Limits::default(),
        publish: Default::default(),
        max_message_size: 1 << 20,
        instances: 1,
    };
    let plugin = host.load(spec, storage).context("loading the plugin")?;
    let record = Record {
        id: crate::ids::new_message_id(),
        key: Some("customer-42".to_owned()),
        headers: vec![(
            "content-type".to_owned(),
            "application/octet-stream".to_owned(),
        )],
        payload: vec![b'x'; args.payload_bytes],
        timestamp_ms: crate::ids::now_ms(),
        reply_to: None,
        correlation_id: None,
    };
    let stored = Stored {
        offset: Offset(0),
        record: Arc::new(record),
    };
    let message = Message::new(&source, &stored, Attempt::FIRST);

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
    println!("plugin:        {}", args.plugin.display());
    println!(
        "payload:       {} bytes, {} calls after {} warm-up calls",
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

fn check(result: Result<crate::host::Outcome, crate::host::Failure>) -> anyhow::Result<()> {
    result
        .map(drop)
        .map_err(|f| anyhow::anyhow!("the plugin failed during the benchmark: {f}"))
}
