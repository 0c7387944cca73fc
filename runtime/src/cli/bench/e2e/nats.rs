//! `weir bench e2e --broker nats`: in one run, on one machine, three figures of the same work
//! (1 KiB events, the same window of messages unacknowledged on one connection):
//!
//! - **nats**: a 3-node JetStream cluster ([`NatsCluster`]) and two `weir run` hosts with one
//!   config (`broker.kind = "nats"`, the queue bound to the plugin in [`PARTITIONS`]
//!   partitions); the events go to one host over its streaming publish. An event is handled
//!   once the commit record of its partition (the bench follows `weir_commits` with a watch)
//!   holds a cursor past its offset: that record is what makes the binding's progress durable.
//! - **embedded**: the same publisher against one `weir run` on the embedded store, what
//!   `--network` measures (`network.rs`).
//! - **ceiling**: what the backend does without weir: async-nats publishing the same number of
//!   events of the same size (with a `Nats-Msg-Id`, as weir publishes) to a stream with the
//!   same replicas, the same number unacknowledged, while an ordered pull consumer reads them;
//!   an event is handled when the consumer receives it.
//!
//! `nats_over_ceiling` is nats' events per second over the ceiling's.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;

use super::E2eArgs;
use super::network::{self, Publisher, pct};
use crate::cli::bench::{round3, workdir::WorkDir};
use crate::cli::chaos::Server;
use crate::cli::nats_cluster::{self, NatsCluster};
use crate::names::BindingName;
use crate::storage::nats_observe;

/// Binding partitions of the run (as in the NATS tests).
const PARTITIONS: u32 = 4;
/// `weir run` hosts sharing the cluster.
const HOSTS: usize = 2;
const BINDING: &str = "bench";
/// How long the hosts may take to share the partitions, and the binding, after the last
/// publish, to handle everything.
const DEADLINE: Duration = Duration::from_secs(120);

pub(super) fn run(args: &E2eArgs, events: u64, base: &Path) -> anyhow::Result<()> {
    if args.backlog || !args.prefill.is_empty() || args.publish != super::PublishMode::Async {
        bail!(
            "--broker nats measures live publishing only: drop --backlog, --prefill and --publish"
        );
    }
    if args.rate.is_some() {
        bail!("--broker nats measures throughput only: drop --rate");
    }
    println!("== embedded store, one host");
    let embedded = network::measure(args, events, base)?;
    embedded.human(args);

    println!("== NATS JetStream: 3 nodes, {HOSTS} weir hosts, {PARTITIONS} partitions");
    let cluster = NatsCluster::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let nats = on_cluster(args, events, base, &cluster, &rt)?;
    nats.human("weir on NATS");
    println!(
        "  handled per host: {:?}",
        nats.per_host.iter().collect::<Vec<_>>()
    );

    println!("== ceiling: async-nats publish + ordered consumer, same cluster");
    let ceiling = rt.block_on(ceiling(args, events, &cluster))?;
    ceiling.human("JetStream ceiling");
    drop(cluster);

    let ratio = round3(nats.rate() / ceiling.rate());
    println!(
        "nats {:.0} events/s, embedded {:.0} events/s, ceiling {:.0} events/s: nats over ceiling {ratio}",
        nats.rate(),
        embedded.rate(),
        ceiling.rate()
    );
    if args.json {
        let mut nats_json = nats.json();
        nats_json["hosts"] = HOSTS.into();
        nats_json["partitions"] = PARTITIONS.into();
        nats_json["handled_per_host"] = nats.per_host.clone().into();
        println!(
            "{}",
            serde_json::json!({
                "scenario": "e2e",
                "broker": "nats",
                "guarantee": args.guarantee.to_string(),
                "events": events,
                "payload_bytes": args.payload_bytes,
                "window": args.publishers,
                "nats": nats_json,
                "embedded": embedded.json(args),
                "ceiling": ceiling.json(),
                "nats_over_ceiling": ratio,
            })
        );
    }
    Ok(())
}

/// What one of the NATS runs measured.
struct Figures {
    events: u64,
    /// Events seen handled.
    handled: u64,
    /// First send to last event handled, in seconds.
    span: f64,
    /// Sent to handled, ns, sorted.
    latency: Vec<u64>,
    /// Sent to acknowledged, ns, sorted.
    publish: Vec<u64>,
    /// The binding's `acked` counter of each host (nats only).
    per_host: Vec<u64>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.handled as f64 / self.span
    }

    fn human(&self, what: &str) {
        println!(
            "{what}: {} of {} events handled in {:.2} s: {:.0} events/s",
            self.handled,
            self.events,
            self.span,
            self.rate()
        );
        println!(
            "  publish sent to handled: p50 {} ms, p99 {} ms, max {} ms",
            pct(&self.latency, 0.5),
            pct(&self.latency, 0.99),
            pct(&self.latency, 1.0)
        );
        println!(
            "  publish sent to acknowledged: p50 {} ms, p99 {} ms",
            pct(&self.publish, 0.5),
            pct(&self.publish, 0.99)
        );
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "events": self.events,
            "handled": self.handled,
            "seconds": round3(self.span),
            "events_per_sec": self.rate().round(),
            "latency_p50_ms": pct(&self.latency, 0.5),
            "latency_p99_ms": pct(&self.latency, 0.99),
            "latency_max_ms": pct(&self.latency, 1.0),
            "publish_p50_ms": pct(&self.publish, 0.5),
            "publish_p99_ms": pct(&self.publish, 0.99),
        })
    }

    /// Sorted latencies and the span from per-event times (ns since one clock; 0 = never).
    fn from_times(events: u64, sent: &[u64], acked: &[u64], handled: &[u64]) -> Figures {
        let (mut latency, mut publish) = (Vec::new(), Vec::new());
        let (mut first, mut last) = (u64::MAX, 0);
        for i in 0..sent.len() {
            first = first.min(sent[i]);
            publish.push(acked[i].saturating_sub(sent[i]));
            if handled[i] > 0 {
                last = last.max(handled[i]);
                latency.push(handled[i].saturating_sub(sent[i]));
            }
        }
        latency.sort_unstable();
        publish.sort_unstable();
        Figures {
            events,
            handled: latency.len() as u64,
            span: last.saturating_sub(first) as f64 / 1e9,
            latency,
            publish,
            per_host: Vec::new(),
        }
    }
}

fn config(args: &E2eArgs, cluster: &NatsCluster) -> anyhow::Result<String> {
    let plugin = std::path::absolute(args.plugin())?;
    Ok(format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [broker]\nkind = \"nats\"\n\
         [broker.nats]\n{}\npartitions = {PARTITIONS}\nlease = \"2s\"\n\
         [queues.bench]\n\
         [plugins.bench]\npath = {:?}\n\
         [[bindings]]\nname = \"{BINDING}\"\nsource = \"bench\"\nplugin = \"bench\"\nguarantee = \"{}\"\n",
        cluster.servers_toml(),
        plugin.display().to_string(),
        args.guarantee
    ))
}

/// Per partition, every cursor its commit record showed: (when, ns since the run's clock;
/// cursor), ascending.
type Cursors = Arc<Mutex<Vec<Vec<(u64, u64)>>>>;

/// Two hosts on the cluster; the events published to the first.
fn on_cluster(
    args: &E2eArgs,
    events: u64,
    base: &Path,
    cluster: &NatsCluster,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Figures> {
    let text = config(args, cluster)?;
    let dirs = (0..HOSTS)
        .map(|_| WorkDir::new("e2e-nats", base))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut hosts = Vec::new();
    for d in &dirs {
        std::fs::write(d.path().join("weir.toml"), &text)?;
        hosts.push(Server::start(d.path())?);
    }
    nats_cluster::wait_spread(&cluster.urls(), PARTITIONS as usize, HOSTS, DEADLINE)?;
    let js = rt.block_on(nats_cluster::connect(&cluster.urls()))?;

    // Every commit record written: (when, ns since `clock`; partition; cursor).
    let clock = Instant::now();
    let cursors: Cursors = Arc::new(Mutex::new(vec![Vec::new(); PARTITIONS as usize]));
    let watcher = {
        let (js, cursors) = (js.clone(), Arc::clone(&cursors));
        rt.spawn(async move { follow_commits(js, clock, cursors).await })
    };

    let n = events as usize;
    let zeros = || -> Arc<Vec<AtomicU64>> { Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()) };
    let parts: Arc<Vec<AtomicU32>> = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect());
    let publisher = Publisher {
        clock,
        sent: zeros(),
        acked: zeros(),
        offsets: zeros(),
        payload: bytes::Bytes::from(vec![b'x'; args.payload_bytes]),
        headers: args.effects,
        partitions: Some((PARTITIONS, Arc::clone(&parts))),
    };
    let mut progress = crate::cli::progress::Progress::bar_only("published", events);
    let published = rt.block_on(async {
        let run = publisher.run(&hosts[0].url, events, None, args.publishers);
        tokio::pin!(run);
        loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let done = publisher.acked.iter().filter(|a| a.load(Relaxed) > 0).count();
                    progress.set(done as u64);
                }
            }
        }
    });
    progress.finish();
    published.context("publishing to the first host")?;

    // The cursor each partition must pass: the offset after its last event.
    let load = |v: &[AtomicU64], i: usize| v[i].load(Relaxed);
    let mut need = vec![0u64; PARTITIONS as usize];
    for i in 0..n {
        let p = parts[i].load(Relaxed) as usize;
        need[p] = need[p].max(load(&publisher.offsets, i) + 1);
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let reached = {
            let c = cursors.lock().expect("cursors");
            (0..PARTITIONS as usize)
                .map(|p| c[p].last().map_or(0, |(_, cur)| *cur))
                .collect::<Vec<_>>()
        };
        if reached.iter().zip(&need).all(|(r, n)| r >= n) {
            break;
        }
        if watcher.is_finished() {
            bail!("the watch of the commit records ended");
        }
        if Instant::now() > deadline {
            bail!(
                "after {DEADLINE:?} the partitions' cursors are {reached:?}, and must reach {need:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    watcher.abort();

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let per_host = hosts
        .iter()
        .map(|h| {
            let url = format!("{}/v1/bindings/{BINDING}", h.url);
            let text = agent.get(&url).call()?.body_mut().read_to_string()?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            v["acked"]
                .as_u64()
                .with_context(|| format!("{url} answered {text}"))
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    drop(hosts);

    let cursors = cursors.lock().expect("cursors");
    let handled: Vec<u64> = (0..n)
        .map(|i| {
            let samples = &cursors[parts[i].load(Relaxed) as usize];
            let o = load(&publisher.offsets, i);
            let k = samples.partition_point(|(_, c)| *c <= o);
            samples.get(k).map_or(0, |(t, _)| (*t).max(1))
        })
        .collect();
    let all = |v: &[AtomicU64]| (0..n).map(|i| load(v, i)).collect::<Vec<_>>();
    let mut f = Figures::from_times(
        events,
        &all(&publisher.sent),
        &all(&publisher.acked),
        &handled,
    );
    f.per_host = per_host;
    Ok(f)
}

/// Follows every write of the binding's commit records and notes each partition's cursor
/// (never going back) and when it was seen.
async fn follow_commits(
    js: jetstream::Context,
    clock: Instant,
    cursors: Cursors,
) -> anyhow::Result<()> {
    let binding = BindingName::new(BINDING)?;
    let keys: BTreeMap<String, usize> = (0..PARTITIONS)
        .map(|p| (nats_observe::commit_key(&binding, p), p as usize))
        .collect();
    let commits = js.get_key_value(nats_observe::COMMITS_BUCKET).await?;
    let mut watch = commits.watch_with_history(">").await?;
    while let Some(entry) = watch.next().await {
        let entry = entry?;
        let at = clock.elapsed().as_nanos() as u64;
        let Some(&p) = keys.get(&entry.key) else {
            continue;
        };
        let Ok(cursor) = nats_observe::commit_cursor(&entry.value) else {
            continue;
        };
        let mut c = cursors.lock().expect("cursors");
        if c[p].last().is_none_or(|(_, last)| *last < cursor.0) {
            c[p].push((at, cursor.0));
        }
    }
    Ok(())
}

/// The backend alone: publish with async-nats, `window` unacknowledged, while an ordered
/// consumer reads the stream.
async fn ceiling(args: &E2eArgs, events: u64, cluster: &NatsCluster) -> anyhow::Result<Figures> {
    let js = nats_cluster::connect(&cluster.urls()).await?;
    let subject = "weir-ceiling.events";
    let config = stream::Config {
        name: "WEIR_CEILING".into(),
        subjects: vec![subject.into()],
        num_replicas: cluster.node_count(),
        ..Default::default()
    };
    let stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| anyhow::anyhow!("creating the ceiling's stream: {e}"))?;
    let n = events as usize;
    let clock = Instant::now();
    let now = || clock.elapsed().as_nanos() as u64;
    let zeros = || -> Vec<AtomicU64> { (0..n).map(|_| AtomicU64::new(0)).collect() };
    let (sent, acked, handled) = (Arc::new(zeros()), zeros(), Arc::new(zeros()));

    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.into(),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the ceiling's consumer: {e}"))?;
    let consuming = {
        let handled = Arc::clone(&handled);
        tokio::spawn(async move {
            let mut messages = consumer.messages().await?;
            let mut got = 0;
            while got < n {
                let Some(m) = messages.next().await else {
                    bail!("the ceiling's consumer ended after {got} messages");
                };
                let m = m?;
                let i = u64::from_le_bytes(m.payload[..8].try_into().expect("8 bytes")) as usize;
                if handled[i].load(Relaxed) == 0 {
                    handled[i].store(clock.elapsed().as_nanos() as u64, Relaxed);
                    got += 1;
                }
            }
            anyhow::Ok(())
        })
    };

    let mut payload = vec![b'x'; args.payload_bytes.max(8)];
    let window = args.publishers.max(1);
    let mut unacked = VecDeque::with_capacity(window);
    for i in 0..n {
        if unacked.len() == window {
            let (j, ack): (usize, jetstream::context::PublishAckFuture) =
                unacked.pop_front().expect("full");
            ack.await?;
            acked[j].store(now(), Relaxed);
        }
        payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("c-{i}").as_str(),
        );
        sent[i].store(now(), Relaxed);
        let ack = js
            .publish_with_headers(subject, headers, payload.clone().into())
            .await?;
        unacked.push_back((i, ack));
    }
    for (j, ack) in unacked {
        ack.await?;
        acked[j].store(now(), Relaxed);
    }
    tokio::time::timeout(DEADLINE, consuming)
        .await
        .context("the ceiling's consumer did not get every message")???;
    let _ = js.delete_stream("WEIR_CEILING").await;
    let all = |v: &[AtomicU64]| v.iter().map(|a| a.load(Relaxed)).collect::<Vec<_>>();
    Ok(Figures::from_times(
        events,
        &all(&sent),
        &all(&acked),
        &all(&handled),
    ))
}
