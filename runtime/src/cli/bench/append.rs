//! `weir bench append`: durable appends from many concurrent publishers (each appends one record
//! and waits for its acknowledgement), against the ceiling of the same disk: the same bytes
//! written by the benchmark itself with one `write` and one `fdatasync` per batch, in batches of
//! the size weir's group commit achieved, in the same run and directory.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::workdir::WorkDir;
use super::{Histogram, round3, rss_mib};
use crate::storage::Record;
use crate::storage::log::{Durability, FaultyIo, Log, LogOptions};

const RSS_AT: [u64; 5] = [1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000];

/// `weir bench append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records to append.
    #[arg(long, default_value_t = 300_000)]
    records: u64,
    /// Concurrent publishers (async tasks), each appending one record at a time. More raise
    /// throughput and queueing latency together: 256 keeps ack p99 within 5 ms on the
    /// development machine while exceeding the throughput targets.
    #[arg(long, default_value_t = 256)]
    publishers: usize,
    /// Durability: `always` acknowledges after fdatasync.
    #[arg(long, value_enum, default_value = "always")]
    fsync: Fsync,
    /// Directory to write in (default: a temporary directory under the current one, removed
    /// afterwards, so the benchmark measures the disk the project lives on).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the written log (in `<dir>/.weir-bench-append-XXXXXX/log`) instead of removing it
    /// (an interrupted run removes it all the same).
    #[arg(long)]
    keep: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Fsync {
    Always,
    Interval,
    Never,
}

pub fn run(args: AppendArgs) -> anyhow::Result<()> {
    if args.records == 0 || args.publishers == 0 {
        bail!("--records and --publishers must be at least 1");
    }
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    let dir = WorkDir::new("append", &base)?;
    let result = measure(&args, dir.path());
    if args.keep {
        let _ = std::fs::remove_file(dir.path().join("ceiling"));
        eprintln!("kept the log in {}", dir.keep().join("log").display());
    }
    result
}

fn measure(args: &AppendArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let durability = match args.fsync {
        Fsync::Always => Durability::Always,
        Fsync::Interval => Durability::Interval(Duration::from_millis(100)),
        Fsync::Never => Durability::Never,
    };
    // The counting file system: real files, plus a count of fsyncs (the batches).
    let io = FaultyIo::new();
    let options = LogOptions::new()
        .durability(durability)
        .io(Arc::new(io.clone()));
    let (log, _) = Log::open(dir.join("log"), options.clone())?;
    let log = Arc::new(log);
    let payload = vec![b'x'; args.record_bytes];
    let next = Arc::new(AtomicU64::new(0));
    // RSS when the appends reach 1, 2, 5, 10 and 20 million records: memory must stay flat.
    let rss_at_1m = Arc::new(std::sync::Mutex::new(Vec::new()));

    // Publishers are async tasks, as in the server: each appends one record and awaits its
    // acknowledgement, so up to `publishers` appends are in flight for group commit to batch.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let histogram = Arc::new(Histogram::new());
    // Progress on stderr, off the publishers' way.
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (acked, done, total) = (Arc::clone(&acked), Arc::clone(&done), args.records);
        std::thread::spawn(move || {
            super::super::progress::follow("appended", total, &done, || {
                acked.load(Ordering::Relaxed)
            });
        })
    };
    let started = Instant::now();
    let appended = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.publishers)
            .map(|t| {
                let (log, next, payload, rss_at_1m, histogram, acked) = (
                    Arc::clone(&log),
                    Arc::clone(&next),
                    payload.clone(),
                    Arc::clone(&rss_at_1m),
                    Arc::clone(&histogram),
                    Arc::clone(&acked),
                );
                let total = args.records;
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            return Ok::<_, anyhow::Error>(());
                        }
                        // Checkpoints count records handed to the log (n + 1), the last included.
                        if RSS_AT.contains(&(n + 1)) {
                            rss_at_1m.lock().expect("rss").push((n + 1, rss_mib()));
                        }
                        let record = Record {
                            id: format!("p{t}-{n}"),
                            key: None,
                            headers: Vec::new(),
                            payload: payload.clone(),
                            timestamp_ms: 0,
                            reply_to: None,
                            correlation_id: None,
                        };
                        let t0 = Instant::now();
                        log.append(std::slice::from_ref(&record)).await?;
                        histogram.record(t0.elapsed().as_micros() as u64);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        Ok::<_, anyhow::Error>(())
    });
    done.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    appended?;
    drop(runtime);
    let elapsed = started.elapsed();
    let rss_end = rss_mib();
    let records_per_sec = args.records as f64 / elapsed.as_secs_f64();
    let bytes = log.size_bytes();
    let syncs = io.syncs().max(1);
    let records_per_batch = (args.records as f64 / syncs as f64).max(1.0);
    let log = Arc::into_inner(log).expect("publishers are done");
    log.close()?;

    // Reopening: how long until the log is ready to serve again.
    let t0 = Instant::now();
    let (reopened, _) = Log::open(dir.join("log"), options)?;
    let reopen_ms = t0.elapsed().as_secs_f64() * 1e3;
    drop(reopened);

    // The ceiling: the same bytes, one write + one fdatasync per batch of the achieved size.
    let frame = bytes as f64 / args.records as f64;
    let batch = vec![b'x'; (frame * records_per_batch).round().max(1.0) as usize];
    let mut file = std::fs::File::create(dir.join("ceiling"))?;
    let t0 = Instant::now();
    let mut written = 0u64;
    while written < bytes {
        file.write_all(&batch)?;
        if matches!(args.fsync, Fsync::Always) {
            file.sync_data()?;
        }
        written += batch.len() as u64;
    }
    let ceiling_per_sec = (written as f64 / frame) / t0.elapsed().as_secs_f64();

    let fsync = format!("{:?}", args.fsync).to_lowercase();
    let ratio = records_per_sec / ceiling_per_sec;
    let (p50, p99) = (histogram.percentile(0.5), histogram.percentile(0.99));
    println!(
        "records:      {} x {} payload bytes ({:.0} bytes per frame), fsync = {fsync}, {} publishers",
        args.records, args.record_bytes, frame, args.publishers
    );
    println!(
        "weir:         {records_per_sec:.0} records/s, ack p50 {p50} us, p99 {p99} us, {records_per_batch:.0} records per fsync"
    );
    println!(
        "ceiling:      {ceiling_per_sec:.0} records/s (one write + fdatasync per {records_per_batch:.0}-record batch, same bytes, same disk)"
    );
    println!("ratio:        {ratio:.2}");
    println!(
        "reopen:       {reopen_ms:.1} ms; RSS {} MiB at the end",
        rss_end.map_or("?".into(), |r| r.to_string())
    );
    let rss_at = |n: u64| {
        rss_at_1m
            .lock()
            .expect("rss")
            .iter()
            .find(|(at, _)| *at == n)
            .and_then(|(_, r)| *r)
    };
    if args.json {
        let out = serde_json::json!({
            "scenario": "append",
            "record_bytes": args.record_bytes,
            "records": args.records,
            "publishers": args.publishers,
            "fsync": fsync,
            "records_per_sec": records_per_sec.round(),
            "ack_p50_us": p50,
            "ack_p99_us": p99,
            "records_per_fsync": round3(records_per_batch),
            "ceiling_records_per_sec": ceiling_per_sec.round(),
            "ratio_to_ceiling": round3(ratio),
            "reopen_ms": round3(reopen_ms),
            "rss_mib_at_1m_records": rss_at(1_000_000),
            "rss_mib_at_records": rss_at_1m.lock().expect("rss").iter().map(|(n, r)| serde_json::json!({"records": n, "rss_mib": r})).collect::<Vec<_>>(),
            "rss_mib_at_end": rss_end,
        });
        println!("{out}");
    }
    Ok(())
}
