//! `weir chaos --scenario deliver --guarantee G`: a delivery guarantee checked across SIGKILLs.
//!
//! A `weir run` child serves a queue `in`, bound with guarantee `G` to the `counter` example
//! plugin, which for every message increments the key-value counters `count` and `count/<key>`
//! and publishes the payload to the queue `out` (header `forward-to`). Publishers send distinct
//! payloads (the message's identity) with `weir-id` ids and keys; a publish interrupted by a kill
//! is sent again with the same id after the restart, so publish dedup stores each input once.
//! The child is SIGKILLed at random moments and restarted. After the last restart the binding
//! drains, the child is stopped gracefully and started once more, and the durable state is read:
//! every acknowledged input must have had its effects (the counters, one output) exactly once
//! (`exactly-once`), at least once (`at-least-once`), or at most once (`at-most-once`).
//!
//! Each output also carries, in header `count`, the total its handling saw. Under
//! `exactly-once` an output must come from the same handling as the key-value writes that were
//! kept, so the outputs carry 1, 2, ... up to the counter, each once; a total repeated or missing
//! means an output survived from a handling whose key-value writes did not (`count_repeats`,
//! `count_gaps`), and fails the run. With `--outputs N` every input asks for N outputs (header
//! `forward-copies`), each with header `copy`: each (input, copy) and each (total, copy) must
//! then be there once.
//!
//! The kills that matter most land between a handler's return and its commit becoming durable.
//! There is no fault hook for that moment (the delivery engine has none); instead the
//! publishers keep the binding busy, so that handled commits are in flight nearly all the time
//! (commits are pipelined: they become durable while the next batch runs). Just before each
//! kill the binding's counters are sampled: `kills_with_work_in_flight` counts the kills whose
//! sample showed invocations run beyond those whose commits were durable.
//!
//! The binding allows 1000 attempts, so a message is not dead-lettered as `interrupted` because
//! many kills happened to land while it was being handled; dead letters are reported apart and
//! count as lost effects.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::chaos::{ChaosArgs, Server, XorShift};
use crate::config::Guarantee;

/// Keys the inputs are spread over.
const KEYS: u64 = 8;
/// The binding's name (the default, `<source>.<plugin>`).
const BINDING: &str = "in.counter";

/// What the run found.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    scenario: &'static str,
    guarantee: String,
    kills: u32,
    seed: u64,
    /// Inputs whose publish was acknowledged.
    published: u64,
    /// Records in `in` (publish dedup: equal to `published`).
    inputs_stored: u64,
    handled_effects: Effects,
    /// The counter `count`.
    counter: u64,
    /// Records in `out`.
    outputs: u64,
    /// Outputs per input.
    outputs_per_input: u32,
    /// Inputs whose effects are missing: without an output, or not counted (per key).
    lost: u64,
    /// Effects beyond one per input: extra outputs, or counted more than once (per key).
    duplicates: u64,
    lost_outputs: u64,
    duplicate_outputs: u64,
    counter_lost: u64,
    counter_duplicates: u64,
    /// Outputs whose `count` header (the total their handling saw) and `copy` another output
    /// also carries: under exactly-once, every handling sees the state of all handlings before
    /// it and no other, so the outputs carry 1, 2, ... up to the counter, each once per copy.
    count_repeats: u64,
    /// (Total in 1..=counter, copy) pairs that no output carries.
    count_gaps: u64,
    dead_lettered: u64,
    kills_with_work_in_flight: u32,
    seconds: f64,
}

/// The effects handling left, the counter and the outputs.
#[derive(Debug, Default, serde::Serialize)]
struct Effects {
    counter: u64,
    outputs: u64,
}

/// The inputs acknowledged so far: payload (identity) to key.
type Inputs = Mutex<HashMap<String, String>>;

/// A publisher's state between runs: its next sequence number, and the sequence number of an
/// input it sent without an acknowledgement (sent again, same id, first thing after the
/// restart).
type Publisher = (u64, Option<u64>);

pub(super) fn run(args: &ChaosArgs, dir: &Path, seed: u64) -> anyhow::Result<()> {
    if !args.plugin.is_file() {
        bail!(
            "plugin `{}` not found; build the example plugins with `scripts/build-plugins` (from the repository root) or pass --plugin",
            args.plugin.display()
        );
    }
    let plugin = std::path::absolute(&args.plugin)?;
    std::fs::write(
        dir.join("weir.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [broker]\nfsync = \"always\"\nsegment_size = \"1MiB\"\n\
             [queues.in]\n[queues.out]\n\
             [plugins.counter]\npath = {:?}\npublish = [\"out\"]\n\
             [[bindings]]\nsource = \"in\"\nplugin = \"counter\"\nguarantee = \"{}\"\nmax_attempts = 1000\n",
            plugin.display().to_string(),
            args.guarantee
        ),
    )?;
    let mut rng = XorShift(seed | 1);
    let started = Instant::now();
    let inputs: Arc<Inputs> = Arc::default();
    let mut report = Report {
        scenario: "deliver",
        guarantee: args.guarantee.to_string(),
        seed,
        outputs_per_input: args.outputs,
        ..Report::default()
    };
    let mut publishers: Vec<Publisher> = vec![(0, None); args.publishers];
    println!(
        "chaos: store in {}, seed {seed}, guarantee {}, {} publishers, {} kills",
        dir.display(),
        args.guarantee,
        args.publishers,
        args.kills
    );

    let mut progress = super::progress::Progress::bar_only("kills", u64::from(args.kills));
    for round in 0..args.kills {
        let mut server = Server::start(dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let threads = spawn_publishers(
            &server.url,
            &publishers,
            &stop,
            &inputs,
            args.outputs,
            false,
        );
        std::thread::sleep(Duration::from_millis(rng.next() % args.max_run_ms.max(1)));
        // Sampled just before the kill: were handled messages waiting for durable commits?
        if let Ok(b) = binding_stats(&server.url) {
            let finished =
                b["acked"].as_u64().unwrap_or(0) + b["dead_lettered"].as_u64().unwrap_or(0);
            if b["invocations"].as_u64().unwrap_or(0) > finished {
                report.kills_with_work_in_flight += 1;
            }
        }
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for (p, t) in threads.into_iter().enumerate() {
            publishers[p] = t.join().expect("publisher thread");
        }
        report.kills += 1;
        progress.set(u64::from(round) + 1);
        if !progress.is_bar() && (!args.json || round % 10 == 9) {
            println!(
                "chaos: kill {}/{}: {} inputs acknowledged so far",
                round + 1,
                args.kills,
                inputs.lock().expect("inputs").len()
            );
        }
    }

    progress.finish();
    // After the last kill: send what was interrupted, let the binding drain, stop gracefully,
    // and read the durable state from a fresh process.
    let server = Server::start(dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    for t in spawn_publishers(&server.url, &publishers, &stop, &inputs, args.outputs, true) {
        let (_, pending) = t.join().expect("publisher thread");
        if pending.is_some() {
            bail!("a publish failed with no kill in between; the server's errors are above");
        }
    }
    drain(&server.url)?;
    server.terminate()?;
    let server = Server::start(dir)?;
    drain(&server.url)?;
    let inputs = inputs.lock().expect("inputs").clone();
    check(&server.url, &inputs, &mut report)?;
    server.stop();

    report.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    // Exactly-once: nothing lost, nothing handled twice, and every output from the same
    // handling as the key-value writes that were kept (the totals the outputs carry are then
    // 1..=counter, each once per copy).
    let consistent = report.count_repeats == 0 && report.count_gaps == 0;
    let ok = match args.guarantee {
        Guarantee::ExactlyOnce => report.lost == 0 && report.duplicates == 0 && consistent,
        Guarantee::AtLeastOnce => report.lost == 0,
        Guarantee::AtMostOnce => report.duplicates == 0,
    };
    println!(
        "chaos: {} kills ({} with handled work in flight), {} inputs: counter {}, outputs {}, lost {}, duplicates {}, dead-lettered {}; output totals repeated {}, missing {} ({})",
        report.kills,
        report.kills_with_work_in_flight,
        report.published,
        report.counter,
        report.outputs,
        report.lost,
        report.duplicates,
        report.dead_lettered,
        report.count_repeats,
        report.count_gaps,
        if ok { "ok" } else { "FAILED" }
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if !ok {
        bail!(
            "the {} guarantee was broken: lost {}, duplicates {}, output totals repeated {}, missing {}",
            args.guarantee,
            report.lost,
            report.duplicates,
            report.count_repeats,
            report.count_gaps
        );
    }
    Ok(())
}

/// The identity (payload) of a publisher's input.
fn identity(publisher: usize, seq: u64) -> String {
    format!("input p{publisher}-{seq}")
}

/// Starts one thread per publisher; each returns its next sequence number and its
/// unacknowledged input. With `only_pending`, a publisher sends its unacknowledged input and
/// stops.
fn spawn_publishers(
    url: &str,
    state: &[Publisher],
    stop: &Arc<AtomicBool>,
    inputs: &Arc<Inputs>,
    outputs: u32,
    only_pending: bool,
) -> Vec<std::thread::JoinHandle<Publisher>> {
    state
        .iter()
        .cloned()
        .enumerate()
        .map(|(p, (next, pending))| {
            let (url, stop, inputs) = (url.to_owned(), Arc::clone(stop), Arc::clone(inputs));
            std::thread::spawn(move || {
                publish_until(
                    &url,
                    p,
                    (next, pending),
                    &stop,
                    &inputs,
                    outputs,
                    only_pending,
                )
            })
        })
        .collect()
}

/// Publishes inputs until told to stop or the server dies.
fn publish_until(
    url: &str,
    publisher: usize,
    (mut next, mut pending): Publisher,
    stop: &AtomicBool,
    inputs: &Inputs,
    outputs: u32,
    only_pending: bool,
) -> Publisher {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    loop {
        let seq = match pending {
            Some(seq) => seq,
            None if only_pending || stop.load(Ordering::Relaxed) => return (next, None),
            None => {
                next += 1;
                *pending.insert(next - 1)
            }
        };
        if stop.load(Ordering::Relaxed) {
            return (next, pending);
        }
        let body = identity(publisher, seq);
        let key = format!("k{}", seq % KEYS);
        let mut req = agent
            .post(format!("{url}/v1/destinations/in/messages"))
            .header("weir-id", format!("p{publisher}-{seq}"))
            .header("weir-key", &key)
            .header("weir-header-forward-to", "out");
        if outputs > 1 {
            req = req.header("weir-header-forward-copies", outputs.to_string());
        }
        let resp = req.send(body.as_bytes());
        // 201: stored; 200: stored before (a retried publish that had been stored).
        let ok = matches!(&resp, Ok(r) if matches!(r.status().as_u16(), 200 | 201));
        if !ok {
            return (next, pending);
        }
        inputs.lock().expect("inputs").insert(body, key);
        pending = None;
    }
}

/// The binding's counters from `/v1/stats`.
fn binding_stats(url: &str) -> anyhow::Result<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let text = agent
        .get(format!("{url}/v1/stats"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let stats: Value = serde_json::from_str(&text)?;
    Ok(stats["bindings"][BINDING].clone())
}

/// Waits until the binding has handled everything in `in` and nothing is in flight.
fn drain(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let b = binding_stats(url)?;
        if b["lag"] == 0 && b["in_flight"] == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the binding did not drain within 120 s: {b}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the counters, the outputs and the dead letters, and counts what is missing or extra.
fn check(url: &str, inputs: &HashMap<String, String>, report: &mut Report) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let get = |path: &str| -> anyhow::Result<Value> {
        let text = agent
            .get(format!("{url}{path}"))
            .call()
            .with_context(|| format!("GET {path}"))?
            .body_mut()
            .read_to_string()?;
        Ok(serde_json::from_str(&text)?)
    };
    let read_all = |dest: &str| -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut from = 0;
        loop {
            let page = get(&format!(
                "/v1/destinations/{dest}/messages?from={from}&limit=1000"
            ))?;
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            let Some(last) = messages.last() else {
                return Ok(all);
            };
            from = last["offset"].as_u64().unwrap_or(from) + 1;
            all.extend(messages);
        }
    };

    report.published = inputs.len() as u64;
    report.inputs_stored = read_all("in")?.len() as u64;
    // Per (input, copy) and per (total, copy).
    let mut outputs: HashMap<(String, u64), u64> = HashMap::new();
    let mut totals: HashMap<(u64, u64), u64> = HashMap::new();
    let copies = u64::from(report.outputs_per_input);
    for m in read_all("out")? {
        let payload = m["payload"].as_str().unwrap_or("<binary>").to_owned();
        let header = |name: &str| {
            m["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| h[0] == name)
                .and_then(|h| h[1].as_str()?.parse::<u64>().ok())
        };
        let copy = header("copy").unwrap_or(0);
        *outputs.entry((payload, copy)).or_default() += 1;
        report.outputs += 1;
        *totals
            .entry((header("count").unwrap_or(0), copy))
            .or_default() += 1;
    }
    for input in inputs.keys() {
        for copy in 0..copies {
            match outputs.get(&(input.clone(), copy)).copied().unwrap_or(0) {
                0 => report.lost_outputs += 1,
                n => report.duplicate_outputs += n - 1,
            }
        }
    }
    report.duplicate_outputs += outputs
        .iter()
        .filter(|((payload, copy), _)| !inputs.contains_key(payload) || *copy >= copies)
        .map(|(_, n)| n)
        .sum::<u64>();

    let kv = get("/v1/plugins/counter/kv?prefix=count&limit=1000")?;
    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    for e in kv["entries"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default().to_owned();
        counters.insert(key, counter_value(e)?);
    }
    report.counter = counters.get("count").copied().unwrap_or(0);
    report.count_repeats = totals.values().map(|n| n - 1).sum();
    report.count_gaps = (1..=report.counter)
        .flat_map(|t| (0..copies).map(move |c| (t, c)))
        .filter(|tc| !totals.contains_key(tc))
        .count() as u64;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for key in inputs.values() {
        *expected.entry(format!("count/{key}")).or_default() += 1;
    }
    for (key, want) in &expected {
        let have = counters.get(key).copied().unwrap_or(0);
        report.counter_lost += want.saturating_sub(have);
        report.counter_duplicates += have.saturating_sub(*want);
    }
    report.counter_duplicates += counters
        .iter()
        .filter(|(k, _)| k.as_str() != "count" && !expected.contains_key(*k))
        .map(|(_, n)| n)
        .sum::<u64>();
    report.handled_effects = Effects {
        counter: report.counter,
        outputs: report.outputs,
    };
    report.lost = report.lost_outputs.max(report.counter_lost);
    report.duplicates = report.duplicate_outputs.max(report.counter_duplicates);

    let stats = get("/v1/stats")?;
    report.dead_lettered = stats["destinations"][format!("{BINDING}.dlq")]["messages"]
        .as_u64()
        .unwrap_or(0);
    Ok(())
}

/// A counter's value from a kv entry (u64 little-endian, shown as hex or, rarely, as text).
pub(super) fn counter_value(entry: &Value) -> anyhow::Result<u64> {
    let bytes: Vec<u8> = match (entry["value_hex"].as_str(), entry["value"].as_str()) {
        (Some(hex), _) => (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()?,
        (None, Some(text)) => text.as_bytes().to_vec(),
        _ => bail!("kv entry without a value: {entry}"),
    };
    let bytes = <[u8; 8]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("counter is not 8 bytes: {entry}"))?;
    Ok(u64::from_le_bytes(bytes))
}
