//! `weir bench streams`: appends to a stream store with `exact` expected revisions from many
//! concurrent appenders, over the real store (the embedded log, fsync always), in one process.
//! Each appender picks a stream from a Zipf distribution over `--streams` streams, appends one
//! event expecting the revision it last saw, and on a conflict takes the actual revision from
//! the refusal and tries again; an append counts once it is durable.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::bail;
use clap::Args;

use super::workdir::WorkDir;
use super::{Histogram, round3, rss_mib};
use crate::es::{ExpectedRevision, NewEvent, StreamAppend, StreamError, StreamName, StreamStore};
use crate::names::DestinationName;
use crate::storage::{EmbeddedOptions, EmbeddedStorage, Storage};

/// `weir bench streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Payload bytes per event.
    #[arg(long, default_value_t = 1024)]
    event_bytes: usize,
    /// Events to append.
    #[arg(long, default_value_t = 300_000)]
    events: u64,
    /// Streams the appenders choose from (Zipf-distributed: a few are hot, most are cold).
    #[arg(long, default_value_t = 1_000_000)]
    streams: u64,
    /// Zipf exponent of the choice of stream.
    #[arg(long, default_value_t = 0.99)]
    zipf: f64,
    /// Concurrent appenders (async tasks), each appending one event at a time with an `exact`
    /// expectation.
    #[arg(long, default_value_t = 256)]
    appenders: usize,
    /// Before measuring, give every one of the `--streams` streams a first event (64 bytes,
    /// in multi-stream appends of 1,000), so appends run against an index of that many
    /// streams; `--prefill false` starts from an empty store.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    prefill: bool,
    /// Directory to write in (default: a temporary directory under the current one, removed
    /// afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Zipf sampling over `1..=n` by inversion of a precomputed cumulative distribution.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// A rank in `0..n` for a uniform `u` in `[0, 1)`.
    fn sample(&self, u: f64) -> u64 {
        self.cdf.partition_point(|c| *c < u) as u64
    }
}

/// xorshift64*: a small, fast, seedable generator (benchmark sampling only).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn run(args: StreamsArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.appenders == 0 || args.streams == 0 {
        bail!("--events, --appenders and --streams must be at least 1");
    }
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    let dir = WorkDir::new("streams", &base)?;
    measure(&args, dir.path())
}

fn measure(args: &StreamsArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let storage: Arc<dyn Storage> = Arc::new(EmbeddedStorage::open(
        dir.join("store"),
        EmbeddedOptions::default(),
    )?);
    let name = DestinationName::new("bench")?;
    storage.open_log(&name)?;
    let store = Arc::new(StreamStore::open(
        name,
        Arc::clone(&storage),
        args.event_bytes.max(1 << 20),
        None,
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let prefill_started = Instant::now();
    if args.prefill {
        let mut k = 0;
        while k < args.streams {
            let appends = (k..(k + 1000).min(args.streams))
                .map(|i| {
                    Ok(StreamAppend {
                        stream: StreamName::new(format!("s-{i}"))?,
                        expected: ExpectedRevision::NoStream,
                        events: vec![NewEvent {
                            event_id: format!("init-{i}"),
                            event_type: "Created".into(),
                            schema_version: 1,
                            headers: Vec::new(),
                            payload: vec![b'i'; 64],
                            correlation_id: None,
                            causation_id: None,
                        }],
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            k += appends.len() as u64;
            runtime.block_on(store.append(appends)?.durable())?;
        }
        eprintln!(
            "prefilled {} streams in {:.1} s",
            args.streams,
            prefill_started.elapsed().as_secs_f64()
        );
    }
    let zipf = Arc::new(Zipf::new(args.streams, args.zipf));
    let payload = vec![b'x'; args.event_bytes];
    let next = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Histogram::new());
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (acked, done, total) = (Arc::clone(&acked), Arc::clone(&done), args.events);
        std::thread::spawn(move || {
            super::super::progress::follow("appended", total, &done, || {
                acked.load(Ordering::Relaxed)
            });
        })
    };
    let started = Instant::now();
    let appended = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.appenders)
            .map(|t| {
                let (store, zipf, next, conflicts, histogram, acked) = (
                    Arc::clone(&store),
                    Arc::clone(&zipf),
                    Arc::clone(&next),
                    Arc::clone(&conflicts),
                    Arc::clone(&histogram),
                    Arc::clone(&acked),
                );
                let payload = payload.clone();
                let total = args.events;
                tokio::spawn(async move {
                    let mut rng =
                        Rng(0x9E37_79B9_7F4A_7C15
                            ^ (t as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            return Ok::<_, anyhow::Error>(());
                        }
                        let stream = StreamName::new(format!("s-{}", zipf.sample(rng.next_f64())))?;
                        // What this appender believes the stream is at (as a client that
                        // loaded it would), corrected by each conflict's actual revision.
                        let mut expected = match store.revision(&stream)? {
                            Some(r) => ExpectedRevision::Exact(r),
                            None => ExpectedRevision::NoStream,
                        };
                        let t0 = Instant::now();
                        loop {
                            let append = StreamAppend {
                                stream: stream.clone(),
                                expected,
                                events: vec![NewEvent {
                                    event_id: format!("e{n}"),
                                    event_type: "Benchmarked".into(),
                                    schema_version: 1,
                                    headers: Vec::new(),
                                    payload: payload.clone(),
                                    correlation_id: None,
                                    causation_id: None,
                                }],
                            };
                            match store.append(vec![append]) {
                                Ok(pending) => {
                                    pending.durable().await?;
                                    break;
                                }
                                Err(StreamError::WrongExpectedRevision { actual, .. }) => {
                                    conflicts.fetch_add(1, Ordering::Relaxed);
                                    expected = actual.map_or(
                                        ExpectedRevision::NoStream,
                                        ExpectedRevision::Exact,
                                    );
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
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
    let events_per_sec = args.events as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (histogram.percentile(0.5), histogram.percentile(0.99));
    let touched = store.stream_count();
    let conflicts = conflicts.load(Ordering::Relaxed);
    let rss = rss_mib();

    // Reopening rebuilds the index from the log.
    drop(store);
    drop(storage);
    let t0 = Instant::now();
    let storage: Arc<dyn Storage> = Arc::new(EmbeddedStorage::open(
        dir.join("store"),
        EmbeddedOptions::default(),
    )?);
    let name = DestinationName::new("bench")?;
    storage.open_log(&name)?;
    let reopened = StreamStore::open(name, storage, 1 << 20, None)?;
    let reopen_ms = t0.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(
        reopened.stream_count() == touched,
        "reopened with {} streams, {touched} before",
        reopened.stream_count()
    );

    println!(
        "events:       {} x {} payload bytes, fsync = always, {} appenders with exact expectations",
        args.events, args.event_bytes, args.appenders
    );
    println!(
        "streams:      {} (Zipf s = {}), {touched} touched, {conflicts} conflicts retried",
        args.streams, args.zipf
    );
    println!("weir:         {events_per_sec:.0} events/s, ack p50 {p50} us, p99 {p99} us");
    println!(
        "reopen:       {reopen_ms:.1} ms (index rebuilt from the log); RSS {} MiB",
        rss.map_or("?".into(), |r| r.to_string())
    );
    if args.json {
        let out = serde_json::json!({
            "scenario": "streams",
            "event_bytes": args.event_bytes,
            "events": args.events,
            "streams": args.streams,
            "zipf": args.zipf,
            "streams_touched": touched,
            "prefilled": args.prefill,
            "appenders": args.appenders,
            "fsync": "always",
            "events_per_sec": events_per_sec.round(),
            "ack_p50_us": p50,
            "ack_p99_us": p99,
            "conflicts": conflicts,
            "reopen_ms": round3(reopen_ms),
            "rss_mib": rss,
        });
        println!("{out}");
    }
    Ok(())
}
