//! `weir chaos --scenario cluster`: `--hosts` weir hosts (default 2) with one config on a
//! 3-node NATS JetStream cluster started by this command ([`NatsCluster`]); the `counter`
//! plugin at `--guarantee` (exactly-once, or at-least-once) with `ordering = "key"` handles the
//! queue `in` and forwards every input to the topic `out`, counting per key. Publishers keep a
//! steady load: each input has the id `in-<i>` and is retried, to whichever host answers, until
//! one acknowledges it (so
//! every input sent is acknowledged in the end, and a retry never stores it twice). `--kills`
//! times, after a random stretch of load, a random weir host or a random NATS node (a coin
//! from the seeded generator, the seed printed) is SIGKILLed and, after a random pause,
//! started again.
//!
//! At the end, once the outputs have caught up: the input stream must hold exactly the
//! acknowledged ids, once each; `out` each input once (no duplicates, none missing) and, per
//! key, in the order of the input stream; and every host's `count/<key>` must equal the
//! inputs of the key. `ok` only if all hold. At-least-once may handle an input more than once:
//! its duplicates are counted, not failures, and a count may be above the key's inputs, never
//! below; the first copies of the outputs must still be complete and in order.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::chaos::{ChaosArgs, Server, XorShift};
use super::chaos_deliver::counter_value;
use super::nats_cluster::{self, NatsCluster};
use crate::config::Guarantee;

const PARTITIONS: usize = 4;
const BINDING: &str = "in.counter";
/// Keys the inputs spread over.
const KEYS: u64 = 12;
/// Inputs per second, all publishers together: enough load that every kill finds work in
/// flight, little enough that the check reads everything back in seconds.
const RATE: u64 = 200;
/// How long one input may go unacknowledged by every host, the outputs take to catch up, and
/// the hosts take to share the partitions.
const DEADLINE: Duration = Duration::from_secs(120);

/// What the run found.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    scenario: &'static str,
    guarantee: String,
    seed: u64,
    hosts: u32,
    kills: u32,
    host_kills: u32,
    node_kills: u32,
    inputs_acked: u64,
    inputs_stored: u64,
    /// Acknowledged and not in the input stream.
    inputs_lost: u64,
    /// In the input stream more than once (extra copies).
    inputs_duplicated: u64,
    /// In the input stream and never acknowledged.
    inputs_unexpected: u64,
    outputs: u64,
    /// Outputs of an input already output (allowed at least once).
    duplicates: u64,
    missing: u64,
    order_violations: u64,
    /// (host, key) pairs whose count is wrong (at least once: below the key's inputs).
    count_mismatches: u64,
    /// Whether the outputs caught up with the inputs before the deadline.
    caught_up: bool,
    /// How long, after the last input was acknowledged, the outputs took to catch up.
    catch_up_seconds: f64,
    ok: bool,
    seconds: f64,
}

/// The live hosts' URLs, by host (`None` while it is down).
type Urls = Arc<Mutex<Vec<Option<String>>>>;

pub(super) fn run(args: &ChaosArgs, dir: &Path, seed: u64) -> anyhow::Result<()> {
    if !args.plugin.is_file() {
        bail!(
            "plugin `{}` not found; build the example plugins with `scripts/build-plugins` (from the repository root) or pass --plugin",
            args.plugin.display()
        );
    }
    if args.guarantee == Guarantee::AtMostOnce {
        bail!(
            "--scenario cluster checks exactly-once or at-least-once (at-most-once may lose work by design)"
        );
    }
    let started = Instant::now();
    let hosts = args.hosts as usize;
    let mut cluster = NatsCluster::start()?;
    let nats_urls = cluster.urls();
    let text = config(args, &cluster)?;
    let dirs: Vec<PathBuf> = (0..hosts).map(|i| dir.join(format!("host{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d)?;
        std::fs::write(d.join("weir.toml"), &text)?;
    }
    let start_host = |i: usize| -> anyhow::Result<Server> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join(format!("host{i}.log")))?;
        Server::start_logging(&dirs[i], Stdio::from(log), "info")
    };
    println!(
        "chaos: cluster, seed {seed}, 3 NATS nodes, {hosts} weir hosts (logs in {}), {} kills",
        dir.display(),
        args.kills
    );
    let mut servers: Vec<Option<Server>> = Vec::new();
    for i in 0..hosts {
        servers.push(Some(start_host(i)?));
    }
    let urls: Urls = Arc::new(Mutex::new(
        servers
            .iter()
            .flatten()
            .map(|s| Some(s.url.clone()))
            .collect(),
    ));
    nats_cluster::wait_spread(&nats_urls, PARTITIONS, hosts, DEADLINE)?;

    let mut report = Report {
        scenario: "cluster",
        guarantee: args.guarantee.to_string(),
        seed,
        hosts: args.hosts,
        ..Report::default()
    };
    let load = Load::start(args.publishers.max(1), Arc::clone(&urls));
    let mut rng = XorShift(seed | 1);
    let mut progress = super::progress::Progress::bar_only("kills", u64::from(args.kills));
    for k in 0..args.kills {
        std::thread::sleep(Duration::from_millis(500 + rng.next() % 1500));
        if load.failed.load(Relaxed) {
            break;
        }
        let kill_host = rng.next().is_multiple_of(2);
        let what = if kill_host {
            let i = (rng.next() % hosts as u64) as usize;
            urls.lock().expect("urls")[i] = None;
            if let Some(mut s) = servers[i].take() {
                s.kill();
            }
            std::thread::sleep(Duration::from_millis(rng.next() % 1000));
            let s = start_host(i)?;
            urls.lock().expect("urls")[i] = Some(s.url.clone());
            servers[i] = Some(s);
            report.host_kills += 1;
            format!("weir host {i}")
        } else {
            let i = (rng.next() % cluster.node_count() as u64) as usize;
            cluster.kill_node(i);
            std::thread::sleep(Duration::from_millis(rng.next() % 1000));
            cluster.start_node(i)?;
            cluster.wait_ready()?;
            report.node_kills += 1;
            format!("NATS node {i}")
        };
        report.kills += 1;
        progress.set(u64::from(k) + 1);
        if !progress.is_bar() {
            println!(
                "chaos: kill {}/{}: {what} killed and restarted; {} inputs acknowledged so far",
                k + 1,
                args.kills,
                load.acked.lock().expect("acked").len()
            );
        }
    }
    progress.finish();
    // A last stretch of load with everything up, then every publisher finishes its input.
    std::thread::sleep(Duration::from_secs(1));
    let acked = load.stop()?;
    report.inputs_acked = acked.len() as u64;

    for (i, s) in servers.iter_mut().enumerate() {
        if let Some(status) = s.as_mut().and_then(Server::exited) {
            print_log_tail(dir, i);
            bail!("weir host {i} exited by itself ({status}); the end of its log is above");
        }
    }
    let live: Vec<String> = servers.iter().flatten().map(|s| s.url.clone()).collect();
    let reader = Reader::new(&live[0]);
    let waited = Instant::now();
    report.caught_up = reader.wait_outputs(acked.len() as u64)?;
    report.catch_up_seconds = (waited.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    check(&reader, &live, &acked, args.guarantee, &mut report)?;
    if !report.caught_up {
        for i in 0..hosts {
            print_log_tail(dir, i);
        }
        println!("chaos: the outputs did not catch up; where the partitions are:");
        for (key, host) in nats_cluster::lease_holders(&nats_urls).unwrap_or_default() {
            println!("  lease {key}: host {host}");
        }
        for url in &live {
            let b = reader.get_at(url, &format!("/v1/bindings/{BINDING}"));
            println!("  {url}: {}", b.map(|v| v.to_string()).unwrap_or_default());
        }
    }
    drop(servers);
    drop(cluster);
    report.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    report.ok = report.caught_up
        && report.inputs_lost == 0
        && report.inputs_duplicated == 0
        && report.inputs_unexpected == 0
        && (report.duplicates == 0 || args.guarantee == Guarantee::AtLeastOnce)
        && report.missing == 0
        && report.order_violations == 0
        && report.count_mismatches == 0;
    println!(
        "chaos: {} kills ({} of a weir host, {} of a NATS node), {} inputs acknowledged, {} stored (lost {}, duplicated {}, unexpected {}); {} outputs: duplicates {}, missing {}, per-key order violations {}; wrong counts {} ({})",
        report.kills,
        report.host_kills,
        report.node_kills,
        report.inputs_acked,
        report.inputs_stored,
        report.inputs_lost,
        report.inputs_duplicated,
        report.inputs_unexpected,
        report.outputs,
        report.duplicates,
        report.missing,
        report.order_violations,
        report.count_mismatches,
        if report.ok { "ok" } else { "FAILED" }
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if !report.ok {
        bail!(
            "the cluster lost, doubled or reordered work (the hosts' logs are in {}; pass --dir to keep them)",
            dir.display()
        );
    }
    Ok(())
}

/// The last lines of host `i`'s log, leaving out the routine refused key-value writes of
/// the counter's global `count`.
fn print_log_tail(dir: &Path, i: usize) {
    let log = std::fs::read_to_string(dir.join(format!("host{i}.log"))).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("not applied") && !l.contains("async_nats"))
        .collect();
    println!("chaos: the end of weir host {i}'s log:");
    for l in &lines[lines.len().saturating_sub(40)..] {
        println!("  {l}");
    }
}

fn config(args: &ChaosArgs, cluster: &NatsCluster) -> anyhow::Result<String> {
    let plugin = std::path::absolute(&args.plugin)?;
    Ok(format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [broker]\nkind = \"nats\"\n\
         [broker.nats]\n{}\npartitions = {PARTITIONS}\nlease = \"2s\"\n\
         [queues.in]\n[topics.out]\n\
         [plugins.counter]\npath = {:?}\npublish = [\"out\"]\n\
         [[bindings]]\nname = \"{BINDING}\"\nsource = \"in\"\nplugin = \"counter\"\n\
         guarantee = \"{}\"\nordering = \"key\"\n",
        cluster.servers_toml(),
        plugin.display().to_string(),
        args.guarantee
    ))
}

/// The publishers: input `i` is due at `i / RATE` s; each publisher takes the next input and
/// retries it until a host acknowledges it.
struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    /// Acknowledged inputs: number → key.
    acked: Arc<Mutex<BTreeMap<u64, String>>>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Load {
    fn start(publishers: usize, urls: Urls) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
        let next = Arc::new(AtomicU64::new(0));
        let began = Instant::now();
        let threads = (0..publishers)
            .map(|_| {
                let (stop, failed, acked, next, urls) = (
                    Arc::clone(&stop),
                    Arc::clone(&failed),
                    Arc::clone(&acked),
                    Arc::clone(&next),
                    Arc::clone(&urls),
                );
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(10)))
                        .build()
                        .into();
                    while !stop.load(Relaxed) {
                        let i = next.fetch_add(1, Relaxed);
                        let due = began + Duration::from_millis(i * 1000 / RATE);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let key = format!("k{}", i % KEYS);
                        if let Err(e) = publish(&agent, &urls, i, &key) {
                            failed.store(true, Relaxed);
                            return Err(e);
                        }
                        acked.lock().expect("acked").insert(i, key);
                    }
                    Ok(())
                })
            })
            .collect();
        Load {
            stop,
            failed,
            acked,
            threads,
        }
    }

    /// Stops the publishers once each has its input acknowledged; every input sent is.
    fn stop(self) -> anyhow::Result<BTreeMap<u64, String>> {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            t.join().expect("publisher thread")?;
        }
        Ok(std::mem::take(&mut *self.acked.lock().expect("acked")))
    }
}

/// Publishes input `i` (id `in-<i>`) to the live hosts in turn until one acknowledges it.
fn publish(agent: &ureq::Agent, urls: &Urls, i: u64, key: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    let mut turn = i as usize;
    loop {
        let live: Vec<String> = urls
            .lock()
            .expect("urls")
            .iter()
            .flatten()
            .cloned()
            .collect();
        if !live.is_empty() {
            turn += 1;
            let url = &live[turn % live.len()];
            let sent = agent
                .post(format!("{url}/v1/destinations/in/messages"))
                .header("weir-key", key)
                .header("weir-id", &format!("in-{i}"))
                .header("weir-header-forward-to", "out")
                .send(i.to_string().as_bytes());
            // 201, or 200 for a retry of an input a host stored without answering.
            if sent.is_ok_and(|r| matches!(r.status().as_u16(), 200 | 201)) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("no host acknowledged input {i} for {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads destinations and key-value state back over HTTP.
struct Reader {
    agent: ureq::Agent,
    url: String,
}

impl Reader {
    fn new(url: &str) -> Reader {
        Reader {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
            url: url.to_owned(),
        }
    }

    fn get_at(&self, url: &str, path: &str) -> anyhow::Result<Value> {
        let text = self
            .agent
            .get(format!("{url}{path}"))
            .call()
            .with_context(|| format!("GET {url}{path}"))?
            .body_mut()
            .read_to_string()?;
        Ok(serde_json::from_str(&text)?)
    }

    fn read_all(&self, dest: &str) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut from = 0;
        loop {
            let page = self.get_at(
                &self.url,
                &format!("/v1/destinations/{dest}/messages?from={from}&limit=1000"),
            )?;
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            let Some(last) = messages.last() else {
                return Ok(all);
            };
            from = last["offset"].as_u64().unwrap_or(from) + 1;
            all.extend(messages);
        }
    }

    /// Waits until `out` holds at least `n` records and the binding has no lag; false if it
    /// did not within the deadline.
    fn wait_outputs(&self, n: u64) -> anyhow::Result<bool> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let stats = self.get_at(&self.url, "/v1/stats")?;
            let outputs = stats["destinations"]["out"]["messages"]
                .as_u64()
                .unwrap_or(0);
            if outputs >= n {
                return Ok(true);
            }
            if Instant::now() > deadline {
                println!("chaos: after {DEADLINE:?}, `out` holds {outputs} of {n} records");
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `count/<key>` on the host at `url`.
    fn counts(&self, url: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        let kv = self.get_at(url, "/v1/plugins/counter/kv?prefix=count/&limit=1000")?;
        kv["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let key = e["key"].as_str().unwrap_or_default().to_owned();
                Ok((key, counter_value(e)?))
            })
            .collect()
    }
}

fn check(
    reader: &Reader,
    hosts: &[String],
    acked: &BTreeMap<u64, String>,
    guarantee: Guarantee,
    report: &mut Report,
) -> anyhow::Result<()> {
    // The input stream: each id once, exactly the acknowledged ones; its order per key.
    let inputs = reader.read_all("in")?;
    report.inputs_stored = inputs.len() as u64;
    let mut copies: HashMap<u64, u64> = HashMap::new();
    let mut order: HashMap<String, Vec<u64>> = HashMap::new();
    for m in &inputs {
        let i = m["id"]
            .as_str()
            .and_then(|id| id.strip_prefix("in-"))
            .and_then(|n| n.parse::<u64>().ok());
        let Some(i) = i else {
            report.inputs_unexpected += 1;
            continue;
        };
        let n = copies.entry(i).or_default();
        *n += 1;
        if *n == 1 {
            let key = m["key"].as_str().unwrap_or_default().to_owned();
            order.entry(key).or_default().push(i);
        }
    }
    report.inputs_duplicated = copies.values().map(|n| n - 1).sum();
    report.inputs_lost = acked.keys().filter(|i| !copies.contains_key(i)).count() as u64;
    report.inputs_unexpected += copies.keys().filter(|i| !acked.contains_key(i)).count() as u64;

    // The outputs: each input once, per key in the input stream's order.
    let position: HashMap<u64, usize> = order
        .values()
        .flat_map(|is| is.iter().enumerate().map(|(p, i)| (*i, p)))
        .collect();
    // At least once, `out` may reach the inputs' number with duplicates before the last first
    // copies are in: read again until none is missing or the deadline passes.
    let deadline = Instant::now() + DEADLINE;
    let outputs = loop {
        let outputs = reader.read_all("out")?;
        let present: std::collections::HashSet<u64> = outputs
            .iter()
            .filter_map(|m| m["payload"].as_str()?.parse().ok())
            .collect();
        if guarantee != Guarantee::AtLeastOnce
            || copies.keys().all(|i| present.contains(i))
            || Instant::now() > deadline
        {
            break outputs;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    report.outputs = outputs.len() as u64;
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut last_by_key: HashMap<String, usize> = HashMap::new();
    for m in &outputs {
        let Some(i) = m["payload"].as_str().and_then(|p| p.parse::<u64>().ok()) else {
            report.duplicates += 1; // not an output of any input
            continue;
        };
        let n = seen.entry(i).or_default();
        *n += 1;
        if *n > 1 {
            report.duplicates += 1;
            continue;
        }
        let key = m["key"].as_str().unwrap_or_default().to_owned();
        if let Some(&p) = position.get(&i) {
            if last_by_key.get(&key).is_some_and(|last| *last > p) {
                report.order_violations += 1;
            }
            last_by_key.insert(key, p);
        }
    }
    report.missing = copies.keys().filter(|i| !seen.contains_key(i)).count() as u64;

    // The counts, as every host sees them (the mirror may take a moment to catch up).
    let want: BTreeMap<String, u64> = order
        .iter()
        .map(|(key, is)| (format!("count/{key}"), is.len() as u64))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for url in hosts {
        loop {
            let got = reader.counts(url)?;
            // At least once a key's count may be above its inputs (an input handled twice).
            let wrong = |k: &String, n: &u64| match (got.get(k), guarantee) {
                (Some(g), Guarantee::AtLeastOnce) => g < n,
                (g, _) => g != Some(n),
            };
            let mismatches = want.iter().filter(|(k, n)| wrong(k, n)).count() as u64
                + got.keys().filter(|k| !want.contains_key(*k)).count() as u64;
            if mismatches == 0 || Instant::now() > deadline {
                report.count_mismatches += mismatches;
                if mismatches > 0 {
                    println!("chaos: counts on {url}: {got:?}, expected {want:?}");
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
