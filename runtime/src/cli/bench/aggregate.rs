//! `weir bench aggregate`: the aggregate command path in one process over the real store (the
//! embedded log, fsync always) and the `order-aggregate` example component.
//!
//! 1. Round trip: commands sent at a fixed `--rate` to `--instances` orders, each answered once
//!    its events are durable: load (cached state, or snapshot plus the events after it),
//!    decide, append with `exact(revision)`, answer. Reported warm (state cache) and cold (the
//!    cache dropped before every command, so every state comes from a snapshot plus the events
//!    after it).
//! 2. Snapshot read cost: a stream of `--long-stream` events whose latest snapshot is 50
//!    events behind; loading its state from the snapshot is compared with reading (and
//!    folding) the 50 events after the snapshot, and with folding the whole stream.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::workdir::WorkDir;
use super::{percentile, round3};
use crate::config::Limits;
use crate::es::{
    AggregateRunner, CommandRequest, ExpectedRevision, NewEvent, StreamAppend, StreamName,
    StreamStore,
};
use crate::host::{AggregateSpec, Host, HostOptions};
use crate::names::{DestinationName, PluginName};
use crate::storage::{EmbeddedOptions, EmbeddedStorage, Storage};

/// `weir bench aggregate`.
#[derive(Debug, Args)]
pub struct AggregateArgs {
    /// The aggregate component (world `weir:plugin/aggregate`, commands as `order-aggregate`).
    #[arg(long, default_value = "plugins/target/components/order-aggregate.wasm")]
    component: PathBuf,
    /// Commands per second sent.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Commands per phase (warm, then cold).
    #[arg(long, default_value_t = 5000)]
    commands: u64,
    /// Orders the commands go to, round robin.
    #[arg(long, default_value_t = 50)]
    instances: u64,
    /// Snapshot every this many events.
    #[arg(long, default_value_t = 100)]
    snapshot_every: u64,
    /// Events of the long stream of the snapshot read cost.
    #[arg(long, default_value_t = 10_000)]
    long_stream: u64,
    /// Directory to write in (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: AggregateArgs) -> anyhow::Result<()> {
    if args.rate == 0 || args.commands == 0 || args.instances == 0 || args.long_stream < 100 {
        bail!("--rate, --commands and --instances must be at least 1, --long-stream at least 100");
    }
    if !args.component.is_file() {
        bail!(
            "no aggregate component at `{}`; build the examples with `scripts/build-plugins` or pass --component",
            args.component.display()
        );
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = WorkDir::new("aggregate", &base)?;
    measure(&args, dir.path())
}

fn measure(args: &AggregateArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let storage: Arc<dyn Storage> = Arc::new(EmbeddedStorage::open(
        dir.join("store"),
        EmbeddedOptions::default(),
    )?);
    let name = DestinationName::new("orders")?;
    storage.open_log(&name)?;
    let store = Arc::new(StreamStore::open(
        name,
        Arc::clone(&storage),
        1 << 20,
        None,
    )?);
    // Commands to an order overlap when round trips outlast the interval between them (a
    // loaded machine), each on an instance of its own: room for many (16 ran out under CI).
    let host = Host::new(HostOptions::default().max_instances(256))?;
    let runner = |name: &str, snapshot_every: u64| -> anyhow::Result<Arc<AggregateRunner>> {
        let aggregate = host
            .load_aggregate(
                AggregateSpec {
                    name: PluginName::new(name)?,
                    path: args.component.clone(),
                    limits: Limits::default(),
                },
                Arc::clone(&storage),
            )
            .with_context(|| format!("loading `{}`", args.component.display()))?;
        Ok(Arc::new(AggregateRunner::new(
            aggregate,
            "order".into(),
            Arc::clone(&store),
            Arc::clone(&storage),
            snapshot_every,
            // Commands to one order overlap when a round trip outlasts the interval between
            // them (a loaded machine): the bench measures round trips, so a command that loses
            // races is decided again rather than refused as contended.
            50,
        )))
    };
    let orders = runner("order", args.snapshot_every)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let command = |t: &str, data: serde_json::Value| CommandRequest {
        command_id: None,
        command_type: t.to_owned(),
        payload: data.to_string().into_bytes(),
        headers: Vec::new(),
    };
    // Every order placed, with a total no phase pays off.
    rt.block_on(async {
        for i in 0..args.instances {
            orders
                .command(
                    &i.to_string(),
                    command("Place", serde_json::json!({"total": u64::MAX / 2})),
                )
                .await?;
        }
        anyhow::Ok(())
    })?;

    let phase = |cold: bool| -> anyhow::Result<(Vec<u64>, f64)> {
        rt.block_on(async {
            let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
            let started = Instant::now();
            let mut tasks = Vec::with_capacity(args.commands as usize);
            for n in 0..args.commands {
                let due = started + interval * n as u32;
                tokio::time::sleep_until(due.into()).await;
                if cold {
                    orders.clear_cache();
                }
                let (orders, id) = (Arc::clone(&orders), (n % args.instances).to_string());
                let request = command("Pay", serde_json::json!({"amount": 1}));
                tasks.push(tokio::spawn(async move {
                    let t0 = Instant::now();
                    orders.command(&id, request).await?;
                    anyhow::Ok(t0.elapsed().as_micros() as u64)
                }));
            }
            let mut samples = Vec::with_capacity(tasks.len());
            for t in tasks {
                samples.push(t.await??);
            }
            let rate = args.commands as f64 / started.elapsed().as_secs_f64();
            samples.sort_unstable();
            anyhow::Ok((samples, rate))
        })
    };
    let (warm, warm_rate) = phase(false)?;
    let (cold, cold_rate) = phase(true)?;
    let stats = orders.stats();

    // The long stream: `long_stream` events, appended directly in pages of 1,000.
    let long = StreamName::new("order-long")?;
    rt.block_on(async {
        let mut at = 0;
        while at < args.long_stream {
            let n = (args.long_stream - at).min(1000);
            let events = (at..at + n)
                .map(|i| NewEvent {
                    event_id: format!("long-{i}"),
                    event_type: if i == 0 { "OrderPlaced" } else { "OrderPaid" }.into(),
                    schema_version: 1,
                    headers: Vec::new(),
                    payload: if i == 0 {
                        br#"{"total": 1000000000}"#.to_vec()
                    } else {
                        br#"{"amount": 1}"#.to_vec()
                    },
                    correlation_id: None,
                    causation_id: None,
                })
                .collect();
            let expected = at
                .checked_sub(1)
                .map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
            store
                .append(vec![StreamAppend {
                    stream: long.clone(),
                    expected,
                    events,
                }])?
                .durable()
                .await?;
            at += n;
        }
        anyhow::Ok(())
    })?;
    // One load folds the stream and writes a snapshot at its end; 50 more events follow it.
    let long_runner = runner("order", args.long_stream)?;
    rt.block_on(long_runner.state("long"))?;
    rt.block_on(async {
        let events = (0..50)
            .map(|i| NewEvent {
                event_id: format!("tail-{i}"),
                event_type: "OrderPaid".into(),
                schema_version: 1,
                headers: Vec::new(),
                payload: br#"{"amount": 1}"#.to_vec(),
                correlation_id: None,
                causation_id: None,
            })
            .collect();
        store
            .append(vec![StreamAppend {
                stream: long.clone(),
                expected: ExpectedRevision::Exact(args.long_stream - 1),
                events,
            }])?
            .durable()
            .await?;
        anyhow::Ok(())
    })?;
    let no_snapshots = runner("order-nosnap", 0)?;
    let time = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<u64> {
        let mut samples = Vec::new();
        for _ in 0..21 {
            let t0 = Instant::now();
            f()?;
            samples.push(t0.elapsed().as_micros() as u64);
        }
        samples.sort_unstable();
        Ok(percentile(&samples, 0.5))
    };
    let from_snapshot_us = time(&|| {
        long_runner.clear_cache();
        let (revision, _) = long_runner.state_blocking("long")?;
        anyhow::ensure!(
            revision == Some(args.long_stream + 49),
            "folded to {revision:?}"
        );
        Ok(())
    })?;
    let tail_read_us = time(&|| {
        let page = store.read_stream(&long, Some(args.long_stream), false, 1000)?;
        anyhow::ensure!(page.events.len() == 50);
        Ok(())
    })?;
    let aggregate = long_runner.aggregate();
    let initial = aggregate
        .initial_state()
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let tail_read_and_fold_us = time(&|| {
        let page = store.read_stream(&long, Some(args.long_stream), false, 1000)?;
        aggregate
            .evolve(initial.clone(), &page.events)
            .map_err(|f| anyhow::anyhow!("{f}"))?;
        Ok(())
    })?;
    let full_fold_us = time(&|| {
        no_snapshots.clear_cache();
        no_snapshots.state_blocking("long")?;
        Ok(())
    })?;
    let snapshot_loads = long_runner.stats().snapshot_loads;
    anyhow::ensure!(
        snapshot_loads >= 21,
        "only {snapshot_loads} loads used the snapshot"
    );
    drop(rt);

    let (w50, w99) = (percentile(&warm, 0.5), percentile(&warm, 0.99));
    let (c50, c99) = (percentile(&cold, 0.5), percentile(&cold, 0.99));
    let ratio = from_snapshot_us as f64 / tail_read_and_fold_us.max(1) as f64;
    println!(
        "commands:     {} per phase at {} /s to {} orders, fsync = always, snapshot every {}",
        args.commands, args.rate, args.instances, args.snapshot_every
    );
    println!("warm:         round trip p50 {w50} us, p99 {w99} us ({warm_rate:.0} commands/s)");
    println!(
        "cold:         round trip p50 {c50} us, p99 {c99} us ({cold_rate:.0} commands/s; every state from a snapshot plus the events after it)"
    );
    println!(
        "long stream:  {} events, snapshot 50 behind: state from the snapshot {from_snapshot_us} us, reading the 50 events after it {tail_read_us} us, reading and folding them {tail_read_and_fold_us} us (ratio {ratio:.2}), folding all {full_fold_us} us",
        args.long_stream + 50
    );
    if args.json {
        let out = serde_json::json!({
            "scenario": "aggregate",
            "rate": args.rate,
            "commands": args.commands,
            "instances": args.instances,
            "fsync": "always",
            "snapshot_every": args.snapshot_every,
            "warm_p50_us": w50,
            "warm_p99_us": w99,
            "warm_rate": warm_rate.round(),
            "cold_p50_us": c50,
            "cold_p99_us": c99,
            "cold_rate": cold_rate.round(),
            "conflicts": stats.conflicts,
            "snapshot_loads": stats.snapshot_loads,
            "long_stream_events": args.long_stream + 50,
            "from_snapshot_us": from_snapshot_us,
            "tail_read_us": tail_read_us,
            "tail_read_and_fold_us": tail_read_and_fold_us,
            "snapshot_to_tail_ratio": round3(ratio),
            "full_fold_us": full_fold_us,
        });
        println!("{out}");
    }
    Ok(())
}
