//! `weir chaos`: crash-safety runs against a real `weir run` child process, SIGKILLed at random
//! moments and restarted. Users run the same command to check weir on their own disks.
//!
//! `--scenario append`: concurrent publishers with `fsync = "always"`; after every restart the
//! whole log is read back and every acknowledged record must be there exactly once, at the offset
//! it was acknowledged with, in each publisher's order, with its exact payload. Half the
//! publishers (the even-numbered ones, so a single publisher too) use the streaming publish (a
//! WebSocket, up to [`WS_WINDOW`] messages unacknowledged, so a kill always finds some in
//! flight); the others one `POST` at a time.
//!
//! `--scenario deliver --guarantee G`: a binding with guarantee `G` handles the published
//! messages with a plugin that counts them and forwards each one; the counter and the outputs
//! are checked against the inputs at the end (see `chaos_deliver.rs`).
//!
//! `--scenario cluster`: weir hosts on a 3-node NATS JetStream cluster, exactly-once, with
//! weir hosts and NATS nodes SIGKILLed under load and restarted (see `chaos_cluster.rs`).
//!
//! `--scenario streams`: appenders race `exact` appends on the shared streams of a stream
//! store, with a projection counting events (see `chaos_streams.rs`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use crate::config::Guarantee;

/// `weir chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// What to exercise.
    #[arg(long, value_enum, default_value = "append")]
    scenario: Scenario,
    /// How many times to SIGKILL the server.
    #[arg(long, default_value_t = 50)]
    pub(super) kills: u32,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 8)]
    pub(super) publishers: usize,
    /// Longest run between a start and its kill, in milliseconds (each kill is uniform in 0..this).
    #[arg(long, default_value_t = 400)]
    pub(super) max_run_ms: u64,
    /// Seed of the kill schedule (default: from the clock; printed so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the store in this directory instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// `deliver`, `cluster`: the binding's guarantee (`exactly-once`, `at-least-once`,
    /// `at-most-once`; `cluster` takes the first two).
    #[arg(long, default_value = "exactly-once")]
    pub(super) guarantee: Guarantee,
    /// `deliver`, `streams`: the counting plugin (the `counter` example, which forwards each message to
    /// its header `forward-to`).
    #[arg(long, default_value = "plugins/target/components/counter.wasm")]
    pub(super) plugin: PathBuf,
    /// `deliver`: outputs per input (the plugin publishes this many, each with header `copy`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub(super) outputs: u32,
    /// `cluster`: weir hosts sharing the NATS cluster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub(super) hosts: u32,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Publishes with fsync = "always" and checks acknowledged records after each crash.
    Append,
    /// Publishes to a queue whose binding counts and forwards every message; checks the
    /// binding's guarantee against the counter and the outputs after the crashes.
    Deliver,
    /// Races `exact` appends (some multi-event, some to two streams at once) on shared streams
    /// of a stream store, with a projection counting each stream's events; checks revisions,
    /// acknowledged events, atomicity and the projection after the crashes.
    Streams,
    /// Exactly-once weir hosts on a 3-node NATS JetStream cluster; SIGKILLs a random host or
    /// NATS node under load, restarts it, and checks inputs, outputs, per-key order and the
    /// counts on every host at the end.
    Cluster,
}

/// What the run found.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    scenario: &'static str,
    kills: u32,
    seed: u64,
    acked: u64,
    /// Of `acked`, those acknowledged over the streaming publish.
    acked_streaming: u64,
    records_found: u64,
    lost: u64,
    duplicates: u64,
    reordered: u64,
    corrupt: u64,
    seconds: f64,
}

/// An acknowledged publish: its offset, and what the payload must be.
#[derive(Debug, Clone)]
struct Acked {
    offset: u64,
    publisher: usize,
    seq: u64,
}

/// Messages a streaming publisher keeps unacknowledged.
const WS_WINDOW: usize = 64;

pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    if args.publishers == 0 {
        bail!("--publishers must be at least 1");
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    let seed = args
        .seed
        .unwrap_or_else(|| crate::ids::now_ms() ^ u64::from(std::process::id()));
    match args.scenario {
        Scenario::Append => append(&args, &dir, seed),
        Scenario::Deliver => super::chaos_deliver::run(&args, &dir, seed),
        Scenario::Streams => super::chaos_streams::run(&args, &dir, seed),
        Scenario::Cluster => super::chaos_cluster::run(&args, &dir, seed),
    }
}

fn append(args: &ChaosArgs, dir: &Path, seed: u64) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("weir.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[broker]\nfsync = \"always\"\nsegment_size = \"1MiB\"\n[queues.chaos]\n",
    )?;
    let mut rng = XorShift(seed | 1);
    let started = Instant::now();
    let acked: Arc<Mutex<HashMap<String, Acked>>> = Arc::default();
    let mut report = Report {
        scenario: "append",
        seed,
        ..Report::default()
    };
    let mut next_seq = vec![0u64; args.publishers];
    println!(
        "chaos: store in {}, seed {seed}, {} publishers, {} kills",
        dir.display(),
        args.publishers,
        args.kills
    );

    let mut progress = super::progress::Progress::bar_only("kills", u64::from(args.kills));
    for round in 0..=args.kills {
        let mut server = Server::start(dir)?;
        check(&server.url, &acked.lock().expect("acked"), &mut report)?;
        if round == args.kills {
            server.stop();
            break;
        }
        // Publish until a random moment, then SIGKILL with requests in flight.
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..args.publishers)
            .map(|p| {
                let (url, stop, acked, first) = (
                    server.url.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&acked),
                    next_seq[p],
                );
                std::thread::spawn(move || {
                    if p % 2 == 0 {
                        stream_until(&url, p, first, &stop, &acked)
                    } else {
                        publish_until(&url, p, first, &stop, &acked)
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.next() % args.max_run_ms.max(1)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for (p, t) in threads.into_iter().enumerate() {
            next_seq[p] = t.join().expect("publisher thread");
        }
        report.kills += 1;
        progress.set(u64::from(round) + 1);
        if !progress.is_bar() && (!args.json || round % 10 == 9) {
            println!(
                "chaos: kill {}/{}: {} acknowledged so far, lost {}, duplicates {}, reordered {}, corrupt {}",
                round + 1,
                args.kills,
                acked.lock().expect("acked").len(),
                report.lost,
                report.duplicates,
                report.reordered,
                report.corrupt
            );
        }
    }
    progress.finish();
    report.acked = acked.lock().expect("acked").len() as u64;
    report.acked_streaming = acked
        .lock()
        .expect("acked")
        .values()
        .filter(|a| a.publisher % 2 == 0)
        .count() as u64;
    report.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let ok =
        report.lost == 0 && report.duplicates == 0 && report.reordered == 0 && report.corrupt == 0;
    println!(
        "chaos: {} kills, {} acknowledged records ({} over the streaming publish): lost {}, duplicates {}, reordered {}, corrupt {} ({})",
        report.kills,
        report.acked,
        report.acked_streaming,
        report.lost,
        report.duplicates,
        report.reordered,
        report.corrupt,
        if ok { "ok" } else { "FAILED" }
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if !ok {
        bail!("acknowledged records were lost, duplicated, reordered or corrupted");
    }
    Ok(())
}

fn payload(publisher: usize, seq: u64) -> String {
    format!(
        "chaos publisher={publisher} seq={seq} {}",
        "x".repeat(200 + (seq % 64) as usize)
    )
}

/// Publishes `publisher`'s records from `seq` until told to stop or the server dies; returns
/// the next sequence number to use.
fn publish_until(
    url: &str,
    publisher: usize,
    mut seq: u64,
    stop: &AtomicBool,
    acked: &Mutex<HashMap<String, Acked>>,
) -> u64 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    while !stop.load(Ordering::Relaxed) {
        let id = format!("p{publisher}-{seq}");
        let body = payload(publisher, seq);
        seq += 1; // never reuse an id, acknowledged or not
        let resp = agent
            .post(format!("{url}/v1/destinations/chaos/messages"))
            .header("weir-id", &id)
            .send(body.as_bytes());
        let Ok(mut resp) = resp else { break };
        if resp.status().as_u16() != 201 {
            break;
        }
        let Ok(text) = resp.body_mut().read_to_string() else {
            break;
        };
        let Some(offset) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["offset"].as_u64())
        else {
            break;
        };
        acked.lock().expect("acked").insert(
            id,
            Acked {
                offset,
                publisher,
                seq: seq - 1,
            },
        );
    }
    seq
}

/// Like [`publish_until`], over the streaming publish: each message a JSON text message with
/// its id, up to [`WS_WINDOW`] unacknowledged; a record counts as acknowledged when its
/// acknowledgement arrives. Returns the next sequence number to use (never reusing the id of a
/// message sent, acknowledged or not).
fn stream_until(
    url: &str,
    publisher: usize,
    first: u64,
    stop: &AtomicBool,
    acked: &Mutex<HashMap<String, Acked>>,
) -> u64 {
    let mut next_seq = first;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _ = rt.block_on(async {
        let mut ws = super::stream_client::connect(url, "chaos", None).await?;
        let next = |n: u64| {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            next_seq = first + n + 1;
            let seq = first + n;
            let m = serde_json::json!({
                "id": format!("p{publisher}-{seq}"),
                "payload": payload(publisher, seq),
            });
            Some(super::stream_client::Message::text(m.to_string()))
        };
        let on_ack = |n: u64, text: &str| {
            let seq = first + n;
            let ack: serde_json::Value = serde_json::from_str(text)?;
            let Some(offset) = ack["offset"].as_u64() else {
                bail!("message {seq} refused: {text}");
            };
            let id = format!("p{publisher}-{seq}");
            acked.lock().expect("acked").insert(
                id,
                Acked {
                    offset,
                    publisher,
                    seq,
                },
            );
            Ok(())
        };
        super::stream_client::publish_all(&mut ws, WS_WINDOW, next, on_ack).await
    });
    next_seq
}

/// Reads the whole log back and counts what is wrong with the acknowledged records.
fn check(url: &str, acked: &HashMap<String, Acked>, report: &mut Report) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut seen: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    let mut from = 0;
    let mut found = 0;
    loop {
        let text = agent
            .get(format!(
                "{url}/v1/destinations/chaos/messages?from={from}&limit=1000"
            ))
            .call()
            .context("reading the log back")?
            .body_mut()
            .read_to_string()?;
        let page: serde_json::Value = serde_json::from_str(&text)?;
        let messages = page["messages"].as_array().cloned().unwrap_or_default();
        let Some(last) = messages.last() else { break };
        from = last["offset"].as_u64().unwrap_or(from) + 1;
        for m in messages {
            found += 1;
            let id = m["id"].as_str().unwrap_or_default().to_owned();
            let payload = m["payload"].as_str().unwrap_or("<binary>").to_owned();
            seen.entry(id)
                .or_default()
                .push((m["offset"].as_u64().unwrap_or(u64::MAX), payload));
        }
    }
    let counts = verify(acked, &seen);
    report.records_found = found;
    report.lost = report.lost.max(counts.lost);
    report.duplicates = report.duplicates.max(counts.duplicates);
    report.reordered = report.reordered.max(counts.reordered);
    report.corrupt = report.corrupt.max(counts.corrupt);
    Ok(())
}

/// What is wrong with the acknowledged records, given what the log holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    lost: u64,
    duplicates: u64,
    reordered: u64,
    corrupt: u64,
}

/// Compares acknowledged records with the log's content (`seen`: id -> (offset, payload) per
/// copy). Unacknowledged records may survive a crash, but never twice.
fn verify(acked: &HashMap<String, Acked>, seen: &HashMap<String, Vec<(u64, String)>>) -> Counts {
    let mut c = Counts::default();
    for (id, a) in acked {
        match seen.get(id).map(Vec::as_slice) {
            None | Some([]) => c.lost += 1,
            Some(copies) => {
                c.duplicates += copies.len() as u64 - 1;
                let (offset, body) = &copies[0];
                if *offset != a.offset {
                    c.reordered += 1;
                }
                if *body != payload(a.publisher, a.seq) {
                    c.corrupt += 1;
                }
            }
        }
    }
    c.duplicates += seen
        .iter()
        .filter(|(id, copies)| !acked.contains_key(*id) && copies.len() > 1)
        .map(|(_, copies)| copies.len() as u64 - 1)
        .sum::<u64>();
    c
}

/// A `weir run` child.
pub(super) struct Server {
    child: Child,
    pub(super) url: String,
}

impl Server {
    pub(super) fn start(dir: &Path) -> anyhow::Result<Server> {
        Server::start_logging(dir, Stdio::inherit(), "warn")
    }

    /// Like [`Server::start`], its log (at `level`) going to `stderr`.
    pub(super) fn start_logging(dir: &Path, stderr: Stdio, level: &str) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the weir binary")?;
        let mut child = Command::new(exe)
            .args(["run", "--config", "weir.toml"])
            .current_dir(dir)
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("starting weir run")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("weir listening on ") {
                        break url.to_owned();
                    }
                }
                _ => {
                    let status = child.wait()?;
                    bail!("weir run exited before listening ({status}); its errors are above");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server { child, url })
    }

    /// The child's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the child exited, if it did.
    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(super) fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub(super) fn stop(mut self) {
        self.kill();
    }

    /// Stops the server with SIGTERM (it finishes its in-flight work) and waits for it to exit.
    pub(super) fn terminate(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !status.success() {
            bail!("could not send SIGTERM to weir run ({pid})");
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("weir run exited with {status} after SIGTERM");
        }
        Ok(())
    }
}

/// A server is never left running: an error on the way out of a run kills it too.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// A small xorshift generator: the kill schedule needs spread, not cryptographic quality.
pub(super) struct XorShift(pub(super) u64);

impl XorShift {
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

fn tempdir() -> std::io::Result<TempDir> {
    let dir = std::env::temp_dir().join(format!(
        "weir-chaos-{}-{}",
        std::process::id(),
        crate::ids::now_ms()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(list: &[(&str, u64, u64)]) -> HashMap<String, Acked> {
        list.iter()
            .map(|(id, offset, seq)| {
                (
                    (*id).to_owned(),
                    Acked {
                        offset: *offset,
                        publisher: 0,
                        seq: *seq,
                    },
                )
            })
            .collect()
    }

    fn seen(list: &[(&str, u64, String)]) -> HashMap<String, Vec<(u64, String)>> {
        let mut m: HashMap<String, Vec<(u64, String)>> = HashMap::new();
        for (id, offset, body) in list {
            m.entry((*id).to_owned())
                .or_default()
                .push((*offset, body.clone()));
        }
        m
    }

    #[test]
    fn verify_counts_each_kind_of_damage() {
        let a = acked(&[("a", 0, 0), ("b", 1, 1), ("c", 2, 2), ("d", 3, 3)]);
        let good = seen(&[
            ("a", 0, payload(0, 0)),
            ("b", 1, payload(0, 1)),
            ("c", 2, payload(0, 2)),
            ("d", 3, payload(0, 3)),
        ]);
        assert_eq!(verify(&a, &good), Counts::default());
        let bad = seen(&[
            // "a" lost; "b" twice; "c" at another offset; "d" with a damaged payload; "e"
            // (never acknowledged) twice.
            ("b", 1, payload(0, 1)),
            ("b", 4, payload(0, 1)),
            ("c", 7, payload(0, 2)),
            ("d", 3, "garbage".to_owned()),
            ("e", 5, payload(0, 9)),
            ("e", 6, payload(0, 9)),
        ]);
        assert_eq!(
            verify(&a, &bad),
            Counts {
                lost: 1,
                duplicates: 2,
                reordered: 1,
                corrupt: 1
            }
        );
    }
}
