//! `weir bench e2e --network`: the same run through the network, as a user's publisher sees
//! it. A `weir run` child serves the config of the run (one queue bound to the plugin); one
//! client connection publishes the events over the streaming publish (the fast path, a
//! WebSocket), and the binding's durable cursor is read from `GET /v1/bindings/{name}` as often
//! as the server answers (at most every [`SAMPLE_EVERY`]).
//!
//! An event is handled once a sample shows the binding's cursor past its offset: the cursor
//! moves only when the event's commit is durable (and past every event before it), and the
//! moment counted is when the sample's answer arrived, so the latency reported is an upper
//! bound by up to one sampling round. Throughput mode keeps `--publishers` messages
//! unacknowledged on the connection; latency mode (`--rate R`) sends event `i` at `i / R` s
//! whatever is still unacknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};

use super::E2eArgs;
use super::setup::config;
use crate::cli::bench::publish::Usage;
use crate::cli::bench::{round3, workdir::WorkDir};
use crate::cli::chaos::Server;
use crate::cli::stream_client::{self, Message};
use crate::storage::nats_observe;

/// Shortest time between two samples of the cursor.
const SAMPLE_EVERY: Duration = Duration::from_micros(200);
/// How long the binding may take, after the last publish, to handle everything.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

pub(super) fn run(args: &E2eArgs, events: u64, base: &std::path::Path) -> anyhow::Result<()> {
    let m = measure(args, events, base)?;
    m.human(args);
    if args.json {
        println!("{}", m.json(args));
    }
    Ok(())
}

/// What a run through the network measured.
pub(super) struct Measured {
    pub(super) events: u64,
    /// First send to last event handled, in seconds.
    pub(super) span: f64,
    /// Publish sent to handled, ns, sorted.
    pub(super) latency: Vec<u64>,
    /// Publish sent to acknowledged, ns, sorted.
    pub(super) publish: Vec<u64>,
    cpu: Option<f64>,
    fsyncs: Option<u64>,
    samples: usize,
}

/// The `q` quantile of sorted nanoseconds, in milliseconds.
pub(super) fn pct(v: &[u64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    round3(v[i] as f64 / 1e6)
}

impl Measured {
    pub(super) fn rate(&self) -> f64 {
        self.events as f64 / self.span
    }

    pub(super) fn human(&self, args: &E2eArgs) {
        let (events, span, rate) = (self.events, self.span, self.rate());
        let (latency, publish) = (&self.latency, &self.publish);
        let mode = match args.rate {
            Some(r) => format!("at {r} events/s"),
            None => format!("{} unacknowledged", args.publishers),
        };
        println!(
            "e2e over the network ({}, {mode}, {} B): {events} events handled in {span:.2} s: {rate:.0} events/s",
            args.guarantee, args.payload_bytes
        );
        println!(
            "  publish sent to handled (durable): p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            pct(latency, 0.5),
            pct(latency, 0.99),
            pct(latency, 0.999),
            pct(latency, 1.0)
        );
        println!(
            "  publish sent to acknowledged:      p50 {} ms, p99 {} ms",
            pct(publish, 0.5),
            pct(publish, 0.99)
        );
        if let (Some(cpu), Some(f)) = (self.cpu, self.fsyncs) {
            println!(
                "  server: {cpu:.2} cores busy, {:.0} fsyncs/s; {} cursor samples",
                f as f64 / span,
                self.samples
            );
        }
    }

    pub(super) fn json(&self, args: &E2eArgs) -> serde_json::Value {
        let (latency, publish, span) = (&self.latency, &self.publish, self.span);
        serde_json::json!({
            "scenario": "e2e",
            "over": "websocket",
            "guarantee": args.guarantee.to_string(),
            "effects": args.effects,
            "events": self.events,
            "payload_bytes": args.payload_bytes,
            "rate": args.rate,
            "window": if args.rate.is_none() { Some(args.publishers) } else { None },
            "seconds": round3(span),
            "events_per_sec": self.rate().round(),
            "latency_p50_ms": pct(latency, 0.5),
            "latency_p99_ms": pct(latency, 0.99),
            "latency_p999_ms": pct(latency, 0.999),
            "latency_max_ms": pct(latency, 1.0),
            "publish_p50_ms": pct(publish, 0.5),
            "publish_p99_ms": pct(publish, 0.99),
            "server_cpu_cores": self.cpu,
            "fsyncs_per_sec": self.fsyncs.map(|f| (f as f64 / span).round()),
            "cursor_samples": self.samples,
        })
    }
}

pub(super) fn measure(
    args: &E2eArgs,
    events: u64,
    base: &std::path::Path,
) -> anyhow::Result<Measured> {
    if args.backlog || !args.prefill.is_empty() || args.publish != super::PublishMode::Async {
        bail!("--network measures live publishing only: drop --backlog, --prefill and --publish");
    }
    let dir = WorkDir::new("e2e", base)?;
    std::fs::write(dir.path().join("weir.toml"), config(args)?)?;
    let server = Server::start(dir.path())?;
    let addr = server
        .url
        .strip_prefix("http://")
        .context("the server's URL")?
        .to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let before = Usage::read(&rt, &addr, Some(server.pid()));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let stats_url = format!("{}/v1/stats", server.url);
    let binding = {
        let stats = get_json(&agent, &stats_url)?;
        let bindings = stats["bindings"].as_object().context("stats: bindings")?;
        bindings.keys().next().context("the run's binding")?.clone()
    };
    let binding_url = format!("{}/v1/bindings/{binding}", server.url);

    let clock = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let offsets: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let failed = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (sent, acked, offsets, failed) = (
            Arc::clone(&sent),
            Arc::clone(&acked),
            Arc::clone(&offsets),
            Arc::clone(&failed),
        );
        let url = server.url.clone();
        let payload = bytes::Bytes::from(vec![b'x'; args.payload_bytes]);
        let headers = args.effects;
        let (rate, window) = (args.rate, args.publishers);
        rt.spawn(async move {
            let publisher = Publisher {
                clock,
                sent,
                acked,
                offsets,
                payload,
                headers,
                partitions: None,
            };
            let r = publisher.run(&url, events, rate, window).await;
            if r.is_err() {
                failed.store(true, Relaxed);
            }
            r
        })
    };

    // Samples of the binding's cursor: (when the answer arrived, ns since `clock`; cursor).
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut progress = crate::cli::progress::Progress::bar_only("handled", events);
    let mut last = Instant::now();
    let mut cursor = 0;
    let mut drain_since: Option<Instant> = None;
    while cursor < events {
        if failed.load(Relaxed) {
            break;
        }
        if publishing.is_finished() {
            let since = *drain_since.get_or_insert_with(Instant::now);
            if since.elapsed() > DRAIN_DEADLINE {
                bail!(
                    "the binding handled {cursor} of {events} events in {DRAIN_DEADLINE:?} after the last publish"
                );
            }
        }
        let wait = SAMPLE_EVERY.saturating_sub(last.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        last = Instant::now();
        let b = get_json(&agent, &binding_url)?;
        let at = clock.elapsed().as_nanos() as u64;
        cursor = b["cursor"]
            .as_u64()
            .context("stats: the binding's cursor")?;
        let failures: u64 = b["failures"]
            .as_object()
            .map(|f| f.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        if failures > 0 || b["dead_lettered"].as_u64().unwrap_or(0) > 0 {
            bail!("the plugin failed during the benchmark: {b}");
        }
        if samples.last().is_none_or(|(_, c)| *c != cursor) {
            samples.push((at, cursor));
        }
        progress.set(cursor.min(events));
    }
    progress.finish();
    rt.block_on(publishing).context("the publisher")??;
    let after = Usage::read(&rt, &addr, Some(server.pid()));
    drop(server);
    drop(dir);

    // Per event: publish sent → handled (the first sample with the cursor past its offset),
    // and sent → acknowledged.
    let mut latency = Vec::with_capacity(events as usize);
    let mut publish = Vec::with_capacity(events as usize);
    let (mut first_sent, mut last_handled) = (u64::MAX, 0);
    for i in 0..events as usize {
        let (s, a, o) = (
            sent[i].load(Relaxed),
            acked[i].load(Relaxed),
            offsets[i].load(Relaxed),
        );
        let k = samples.partition_point(|(_, c)| *c <= o);
        let (handled, _) = samples.get(k).context("an event the cursor never passed")?;
        first_sent = first_sent.min(s);
        last_handled = last_handled.max(*handled);
        latency.push(handled.saturating_sub(s));
        publish.push(a.saturating_sub(s));
    }
    latency.sort_unstable();
    publish.sort_unstable();
    let span = (last_handled - first_sent) as f64 / 1e9;
    let cpu = before
        .cpu
        .zip(after.cpu)
        .map(|(a, b)| round3((b - a) / span));
    let fsyncs = before
        .fsyncs
        .zip(after.fsyncs)
        .map(|(a, b)| b.saturating_sub(a));
    Ok(Measured {
        events,
        span,
        latency,
        publish,
        cpu,
        fsyncs,
        samples: samples.len(),
    })
}

/// The one connection publishing the events.
pub(super) struct Publisher {
    pub(super) clock: Instant,
    /// Per event, ns since `clock`: when it was sent and acknowledged, and its offset.
    pub(super) sent: Arc<Vec<AtomicU64>>,
    pub(super) acked: Arc<Vec<AtomicU64>>,
    pub(super) offsets: Arc<Vec<AtomicU64>>,
    pub(super) payload: bytes::Bytes,
    /// Each event carries `forward-to: out` (`--effects`): a JSON text message then.
    pub(super) headers: bool,
    /// On a NATS cluster of this many partitions: per event, the partition its acknowledged
    /// id goes to.
    pub(super) partitions: Option<(u32, Arc<Vec<AtomicU32>>)>,
}

impl Publisher {
    fn now(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    fn message(&self) -> Message {
        if self.headers {
            let m = serde_json::json!({
                "payload": String::from_utf8_lossy(&self.payload),
                "headers": {"forward-to": "out"},
            });
            Message::text(m.to_string())
        } else {
            Message::Binary(self.payload.clone())
        }
    }

    fn ack(&self, i: u64, text: &str) -> anyhow::Result<()> {
        let Some(offset) = ack_offset(text) else {
            bail!("publish {i} refused: {text}");
        };
        let i = i as usize;
        self.acked[i].store(self.now(), Relaxed);
        self.offsets[i].store(offset, Relaxed);
        if let Some((n, parts)) = &self.partitions {
            let Some(id) = ack_id(text) else {
                bail!("acknowledgement {i} carries no id: {text}");
            };
            parts[i].store(nats_observe::partition_of_id(id, *n), Relaxed);
        }
        Ok(())
    }

    pub(super) async fn run(
        &self,
        url: &str,
        events: u64,
        rate: Option<u64>,
        window: usize,
    ) -> anyhow::Result<()> {
        let mut ws = stream_client::connect(url, "bench", None).await?;
        let Some(rate) = rate else {
            let next = |i: u64| {
                (i < events).then(|| {
                    self.sent[i as usize].store(self.now(), Relaxed);
                    self.message()
                })
            };
            stream_client::publish_all(&mut ws, window, next, |i, t| self.ack(i, t)).await?;
            return Ok(());
        };
        // Latency mode: each event at its due time, however many are unacknowledged.
        let (mut tx, mut rx) = ws.split();
        let due = |i: u64| {
            Duration::from_nanos((u128::from(i) * 1_000_000_000 / u128::from(rate)) as u64)
        };
        let send = async {
            let start = tokio::time::Instant::now();
            let mut i = 0u64;
            while i < events {
                tokio::time::sleep_until(start + due(i)).await;
                // Everything due by now goes in one write.
                let now = start.elapsed();
                while i < events && due(i) <= now {
                    self.sent[i as usize].store(self.now(), Relaxed);
                    tx.feed(self.message()).await?;
                    i += 1;
                }
                tx.flush().await?;
            }
            anyhow::Ok(tx)
        };
        let receive = async {
            let mut i = 0u64;
            while i < events {
                match rx.next().await {
                    Some(Ok(Message::Text(t))) => {
                        self.ack(i, t.as_str())?;
                        i += 1;
                    }
                    Some(Ok(Message::Close(f))) => bail!("the server closed the stream: {f:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e).context("reading acknowledgements"),
                    None => bail!("the connection ended after {i} acknowledgements"),
                }
            }
            Ok(())
        };
        let (tx, ()) = tokio::try_join!(send, receive)?;
        let mut ws = tx.reunite(rx).context("the WebSocket's halves")?;
        ws.close(None).await.ok();
        Ok(())
    }
}

fn get_json(agent: &ureq::Agent, url: &str) -> anyhow::Result<serde_json::Value> {
    let text = agent.get(url).call()?.body_mut().read_to_string()?;
    serde_json::from_str(&text).with_context(|| format!("{url} answered: {text}"))
}

/// The offset of a successful acknowledgement (`{"seq":N,"offset":O,...}`), without parsing
/// all of its JSON.
fn ack_offset(text: &str) -> Option<u64> {
    let rest = &text[text.find("\"offset\":")? + 9..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The id of a successful acknowledgement (`{"seq":N,"offset":O,"id":"..."}`); ids weir
/// makes need no JSON unescaping.
fn ack_id(text: &str) -> Option<&str> {
    let rest = &text[text.find("\"id\":\"")? + 6..];
    Some(&rest[..rest.find('"')?])
}

#[cfg(test)]
mod tests {
    #[test]
    fn ack_offset_reads_the_offset_of_a_success_only() {
        assert_eq!(
            super::ack_offset(r#"{"seq":3,"offset":1234,"id":"x"}"#),
            Some(1234)
        );
        assert_eq!(
            super::ack_offset(r#"{"seq":3,"error":{"code":"invalid"}}"#),
            None
        );
        assert_eq!(
            super::ack_id(r#"{"seq":3,"offset":1234,"id":"01ab"}"#),
            Some("01ab")
        );
    }
}
