//! `weir chaos --scenario streams`: concurrent appenders race `exact` appends (one to three
//! events, to one stream or atomically to two) on a few shared streams of a stream store, while
//! the server is SIGKILLed at random moments and restarted. A projection (the `counter` example,
//! exactly-once) counts the events of each stream. After every restart the whole store is read
//! back, and at the end the projection is compared with a fold of the surviving events:
//!
//! - `lost`: acknowledged events missing, or not at the revision and position acknowledged;
//! - `revisions_duplicated` / `revisions_skipped`: a stream's revisions are not exactly 0..n;
//! - `stale_appends`: a stored event whose revision is not the one its append expected (its
//!   append succeeded against a stale revision);
//! - `partial_appends`: an append (acknowledged or cut off by the kill) of which some events
//!   are stored and some are not;
//! - `projection_mismatches`: streams whose projected count differs from their stored events.
//!
//! Meanwhile command clients send `Pay` commands (each with its own command id) to the
//! `order-aggregate` example over a few shared orders, and resend a command cut off by a kill
//! with the same id once the server is back:
//!
//! - `commands_lost`: an acknowledged command whose events are missing;
//! - `commands_doubled`: a command whose events are stored more than once, or a resent command
//!   answered with new events although its first send had stored them;
//! - `aggregate_mismatches`: an order whose state (from snapshot, cache and events) is not the
//!   fold of its stored events.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::chaos::{ChaosArgs, Server, XorShift};

const BINDING: &str = "chaos.counter";
/// Orders the command clients share.
const ORDERS: u64 = 3;
/// Command clients.
const COMMANDERS: usize = 2;
/// Streams the appenders share: few, so that appends conflict often.
const STREAMS: u64 = 12;

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    scenario: &'static str,
    kills: u32,
    seed: u64,
    /// Appends acknowledged (201).
    appends_acked: u64,
    /// Events in acknowledged appends.
    events_acked: u64,
    /// Appends refused with 409 wrong_expected_revision (then retried with the actual revision).
    conflicts: u64,
    /// Appends cut off by a kill: unknown outcome, checked for all-or-nothing.
    appends_in_doubt: u64,
    /// Events in the store at the end.
    events_stored: u64,
    lost: u64,
    revisions_duplicated: u64,
    revisions_skipped: u64,
    stale_appends: u64,
    partial_appends: u64,
    duplicate_event_ids: u64,
    /// Streams whose projected event count differs from the events stored.
    projection_mismatches: u64,
    /// The projection's total count and the events it should have counted.
    projection_total: u64,
    /// Commands acknowledged (201, or 200 for one handled before).
    commands_acked: u64,
    /// Commands cut off by a kill, then resent with the same id.
    commands_resent: u64,
    /// Commands refused as contended or rejected (nothing stored).
    commands_refused: u64,
    commands_lost: u64,
    commands_doubled: u64,
    aggregate_mismatches: u64,
    seconds: f64,
}

/// One append as sent: per stream, the revision it expected and its event ids.
#[derive(Debug, Clone)]
struct Attempt {
    streams: Vec<(String, Option<u64>, Vec<String>)>,
}

/// An acknowledged append: per stream, the revision and position of each event id.
#[derive(Debug, Clone)]
struct Acked {
    events: Vec<(String, String, u64, u64)>,
}

#[derive(Debug, Default)]
struct Book {
    acked: Vec<Acked>,
    attempts: Vec<Attempt>,
    conflicts: u64,
    in_doubt: u64,
    /// Acknowledged commands: command id → stream and first revision.
    commands: HashMap<String, (String, u64)>,
    commands_resent: u64,
    commands_refused: u64,
    /// Resent commands answered with new events although their first send had stored them.
    commands_doubled: u64,
}

pub(super) fn run(args: &ChaosArgs, dir: &Path, seed: u64) -> anyhow::Result<()> {
    if !args.plugin.is_file() {
        bail!(
            "plugin `{}` not found; build the example plugins with `scripts/build-plugins` (from the repository root) or pass --plugin",
            args.plugin.display()
        );
    }
    let plugin = std::path::absolute(&args.plugin)?;
    let aggregate = plugin.with_file_name("order-aggregate.wasm");
    if !aggregate.is_file() {
        bail!(
            "aggregate `{}` not found (it is looked for beside --plugin); build the example plugins with `scripts/build-plugins`",
            aggregate.display()
        );
    }
    std::fs::write(
        dir.join("weir.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [broker]\nfsync = \"always\"\nsegment_size = \"1MiB\"\n\
             [streams.chaos]\n\
             [plugins.counter]\npath = {:?}\n\
             [aggregates.order]\npath = {:?}\nstore = \"chaos\"\nsnapshot_every = 20\nconflict_retries = 100\n\
             [[bindings]]\nsource = \"chaos\"\nplugin = \"counter\"\nguarantee = \"exactly-once\"\nordering = \"key\"\nmax_attempts = 1000\n",
            plugin.display().to_string(),
            aggregate.display().to_string()
        ),
    )?;
    let mut rng = XorShift(seed | 1);
    let started = Instant::now();
    let book: Arc<Mutex<Book>> = Arc::default();
    let mut report = Report {
        scenario: "streams",
        seed,
        ..Report::default()
    };
    let mut seqs = vec![0u64; args.publishers];
    // Per command client: its next command number and the command a kill cut off.
    let mut commanders: Vec<(u64, Option<(String, u64)>)> = vec![(0, None); COMMANDERS];
    println!(
        "chaos: store in {}, seed {seed}, {} appenders on {STREAMS} streams, {} kills",
        dir.display(),
        args.publishers,
        args.kills
    );
    let mut progress = super::progress::Progress::bar_only("kills", u64::from(args.kills));
    for round in 0..=args.kills {
        let mut server = Server::start(dir)?;
        check_store(&server.url, &book.lock().expect("book"), &mut report)?;
        check_aggregates(&server.url, &mut report)?;
        if round == args.kills {
            drain(&server.url)?;
            check_projection(&server.url, &mut report)?;
            server.stop();
            break;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..args.publishers)
            .map(|p| {
                let (url, stop, book, first) = (
                    server.url.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&book),
                    seqs[p],
                );
                let seed = seed ^ (p as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                std::thread::spawn(move || append_until(&url, p, first, seed, &stop, &book))
            })
            .collect();
        let command_threads: Vec<_> = (0..COMMANDERS)
            .map(|c| {
                let (url, stop, book, state) = (
                    server.url.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&book),
                    commanders[c].clone(),
                );
                std::thread::spawn(move || command_until(&url, c, state, &stop, &book))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.next() % args.max_run_ms.max(1)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for (p, t) in threads.into_iter().enumerate() {
            seqs[p] = t.join().expect("appender thread");
        }
        for (c, t) in command_threads.into_iter().enumerate() {
            commanders[c] = t.join().expect("command thread");
        }
        report.kills += 1;
        progress.set(u64::from(round) + 1);
        if !progress.is_bar() && (!args.json || round % 10 == 9) {
            let b = book.lock().expect("book");
            println!(
                "chaos: kill {}/{}: {} appends acknowledged, {} conflicts so far",
                round + 1,
                args.kills,
                b.acked.len(),
                b.conflicts
            );
        }
    }
    progress.finish();
    {
        let b = book.lock().expect("book");
        report.appends_acked = b.acked.len() as u64;
        report.events_acked = b.acked.iter().map(|a| a.events.len() as u64).sum();
        report.conflicts = b.conflicts;
        report.appends_in_doubt = b.in_doubt;
        report.commands_acked = b.commands.len() as u64;
        report.commands_resent = b.commands_resent;
        report.commands_refused = b.commands_refused;
        report.commands_doubled += b.commands_doubled;
    }
    report.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let ok = report.lost == 0
        && report.revisions_duplicated == 0
        && report.revisions_skipped == 0
        && report.stale_appends == 0
        && report.partial_appends == 0
        && report.duplicate_event_ids == 0
        && report.projection_mismatches == 0
        && report.commands_lost == 0
        && report.commands_doubled == 0
        && report.aggregate_mismatches == 0;
    println!(
        "chaos: {} kills, {} appends ({} events) acknowledged, {} conflicts, {} in doubt, {} events stored: lost {}, revisions duplicated {}, skipped {}, stale appends {}, partial appends {}, projection mismatches {} ({})",
        report.kills,
        report.appends_acked,
        report.events_acked,
        report.conflicts,
        report.appends_in_doubt,
        report.events_stored,
        report.lost,
        report.revisions_duplicated,
        report.revisions_skipped,
        report.stale_appends,
        report.partial_appends,
        report.projection_mismatches,
        if ok { "ok" } else { "FAILED" }
    );
    println!(
        "chaos: {} commands acknowledged, {} resent after a kill, {} refused: lost {}, doubled {}, aggregate states not the fold of their events {}",
        report.commands_acked,
        report.commands_resent,
        report.commands_refused,
        report.commands_lost,
        report.commands_doubled,
        report.aggregate_mismatches
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if !ok {
        bail!("the stream store broke an invariant (see the counts above)");
    }
    Ok(())
}

/// Appends as appender `p` until told to stop or the server dies; returns the next sequence
/// number.
fn append_until(
    url: &str,
    p: usize,
    mut seq: u64,
    seed: u64,
    stop: &AtomicBool,
    book: &Mutex<Book>,
) -> u64 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut rng = XorShift(seed | 1);
    // What this appender believes each stream's revision is; corrected by every conflict.
    let mut view: HashMap<String, Option<u64>> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let first = rng.next() % STREAMS;
        let mut names = vec![format!("c-{first}")];
        if rng.next().is_multiple_of(5) {
            names.push(format!(
                "c-{}",
                (first + 1 + rng.next() % (STREAMS - 1)) % STREAMS
            ));
        }
        let mut attempt = Attempt {
            streams: Vec::new(),
        };
        let mut appends = Vec::new();
        for (k, name) in names.iter().enumerate() {
            let expected = view.get(name).copied().unwrap_or(None);
            let n = 1 + rng.next() % 3;
            let mut ids = Vec::new();
            let events: Vec<Value> = (0..n)
                .map(|i| {
                    let id = format!("p{p}-{seq}-{k}-{i}");
                    ids.push(id.clone());
                    json!({ "type": "Counted", "id": id, "data": { "expected": expected, "i": i } })
                })
                .collect();
            let expected_json = expected.map_or(json!("no-stream"), |r| json!(r));
            appends.push(
                json!({ "stream": name, "expected_revision": expected_json, "events": events }),
            );
            attempt.streams.push((name.clone(), expected, ids));
        }
        seq += 1; // never reuse an id, acknowledged or not
        book.lock().expect("book").attempts.push(attempt.clone());
        let body = json!({ "appends": appends }).to_string();
        let resp = agent
            .post(format!("{url}/v1/streams/chaos/append"))
            .header("content-type", "application/json")
            .send(body.as_bytes());
        let answer = resp.ok().and_then(|mut r| {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().ok()?;
            Some((status, serde_json::from_str::<Value>(&text).ok()?))
        });
        let Some((status, answer)) = answer else {
            book.lock().expect("book").in_doubt += 1;
            break;
        };
        match status {
            201 => {
                let mut acked = Acked { events: Vec::new() };
                for (a, (name, _, ids)) in answer["appends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .zip(&attempt.streams)
                {
                    let (Some(rev), Some(pos)) =
                        (a["first_revision"].as_u64(), a["first_position"].as_u64())
                    else {
                        continue;
                    };
                    for (i, id) in ids.iter().enumerate() {
                        acked.events.push((
                            name.clone(),
                            id.clone(),
                            rev + i as u64,
                            pos + i as u64,
                        ));
                    }
                    view.insert(name.clone(), a["last_revision"].as_u64());
                }
                book.lock().expect("book").acked.push(acked);
            }
            409 if answer["error"]["code"] == "wrong_expected_revision" => {
                book.lock().expect("book").conflicts += 1;
                if let Some(stream) = answer["error"]["stream"].as_str() {
                    view.insert(
                        stream.to_owned(),
                        answer["error"]["actual_revision"].as_u64(),
                    );
                }
            }
            _ => {
                eprintln!("chaos: appender {p} stopped at HTTP {status}: {answer}");
                book.lock().expect("book").in_doubt += 1;
                break;
            }
        }
    }
    seq
}

/// Sends commands as client `c` until told to stop or the server dies: first the command a
/// kill cut off (same id), then `Pay` commands to the shared orders. Returns the client's next
/// command number and the command cut off, if any.
fn command_until(
    url: &str,
    c: usize,
    (mut seq, mut pending): (u64, Option<(String, u64)>),
    stop: &AtomicBool,
    book: &Mutex<Book>,
) -> (u64, Option<(String, u64)>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let resent = pending.is_some();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let (id, order) = match pending.take() {
            Some(p) => p,
            None => {
                seq += 1;
                // Each client first places every order (all but the first placing are
                // refused), then pays.
                let kind = if seq <= ORDERS { "place" } else { "pay" };
                (format!("{kind}-{c}-{seq}"), seq % ORDERS)
            }
        };
        let (kind, data) = if id.starts_with("place-") {
            ("Place", json!({ "total": u64::MAX / 2 }))
        } else {
            ("Pay", json!({ "amount": 1 }))
        };
        let body = json!({ "type": kind, "command_id": id, "data": data }).to_string();
        let answer = agent
            .post(format!("{url}/v1/aggregates/order/{order}/commands"))
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .ok()
            .and_then(|mut r| {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().ok()?;
                Some((status, serde_json::from_str::<Value>(&text).ok()?))
            });
        let Some((status, answer)) = answer else {
            // Cut off: resent with the same id once the server is back.
            return (seq, Some((id, order)));
        };
        let mut b = book.lock().expect("book");
        if first && resent {
            b.commands_resent += 1;
        }
        match status {
            201 | 200 => {
                let first_revision = answer["appended"][0].as_u64();
                if let Some(r) = first_revision {
                    let stream = answer["stream"].as_str().unwrap_or_default().to_owned();
                    if let Some(before) = b.commands.insert(id.clone(), (stream.clone(), r))
                        && before != (stream, r)
                    {
                        b.commands_doubled += 1;
                    }
                }
            }
            409 | 422 => b.commands_refused += 1,
            _ => {
                eprintln!("chaos: command client {c} stopped at HTTP {status}: {answer}");
                return (seq, None);
            }
        }
        first = false;
    }
    (seq, pending)
}

/// Each order's state (as the aggregate loads it: cache, snapshot, events) against a fold of
/// its stored events, and each acknowledged command's events against the store.
fn check_aggregates(url: &str, report: &mut Report) -> anyhow::Result<()> {
    let mut mismatches = 0;
    for order in 0..ORDERS {
        let first = agent()
            .get(format!(
                "{url}/v1/streams/chaos/streams/order-{order}?limit=1000"
            ))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .with_context(|| format!("GET order-{order}"))?;
        let (mut events, mut next) = if first.status().as_u16() == 404 {
            (Vec::new(), None)
        } else {
            let text = { first }.body_mut().read_to_string()?;
            let page: Value = serde_json::from_str(&text)?;
            (
                page["events"].as_array().cloned().unwrap_or_default(),
                page["next"].as_u64(),
            )
        };
        while let Some(from) = next {
            let page = get(
                url,
                &format!("/v1/streams/chaos/streams/order-{order}?from={from}&limit=1000"),
            )?;
            events.extend(page["events"].as_array().cloned().unwrap_or_default());
            next = page["next"].as_u64();
        }
        let paid = events.iter().filter(|e| e["type"] == "OrderPaid").count() as u64;
        let state = get(url, &format!("/v1/aggregates/order/{order}"))?;
        let folded = (
            state["state"]["events"].as_u64(),
            state["state"]["paid"].as_u64(),
            state["revision"].as_u64(),
        );
        let want = (
            Some(events.len() as u64),
            Some(paid),
            (events.len() as u64).checked_sub(1),
        );
        if folded != want {
            eprintln!("chaos: order-{order}: state {folded:?}, a fold of its events {want:?}");
            mismatches += 1;
        }
    }
    report.aggregate_mismatches = mismatches;
    Ok(())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get(url: &str, path: &str) -> anyhow::Result<Value> {
    let text = agent()
        .get(format!("{url}{path}"))
        .call()
        .with_context(|| format!("GET {path}"))?
        .body_mut()
        .read_to_string()?;
    Ok(serde_json::from_str(&text)?)
}

/// Every event of the store, in position order.
fn read_store(url: &str) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let page = get(
            url,
            &format!("/v1/streams/chaos/events?from={from}&limit=1000"),
        )?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let next = page["next"].as_u64().unwrap_or(from);
        all.extend(events);
        if next >= page["end"].as_u64().unwrap_or(0) || next == from {
            return Ok(all);
        }
        from = next;
    }
}

/// Reads the store back and counts what is wrong (the counts are the latest check's).
fn check_store(url: &str, book: &Book, report: &mut Report) -> anyhow::Result<()> {
    let events = read_store(url)?;
    report.events_stored = events.len() as u64;
    let mut by_id: HashMap<String, (String, u64, u64)> = HashMap::new();
    let mut revisions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let (mut duplicate_ids, mut stale) = (0, 0);
    for e in &events {
        let stream = e["stream"].as_str().unwrap_or_default().to_owned();
        let revision = e["revision"].as_u64().unwrap_or(u64::MAX);
        let position = e["position"].as_u64().unwrap_or(u64::MAX);
        let id = e["id"].as_str().unwrap_or_default().to_owned();
        // Event i of an append that expected revision r is revision r + 1 + i (0 + i for no
        // stream): anything else was appended against a stale revision.
        // (The aggregate's events are checked by `check_aggregates`.)
        let i = e["data"]["i"].as_u64().unwrap_or(0);
        let want = e["data"]["expected"].as_u64().map_or(i, |r| r + 1 + i);
        if !stream.starts_with("order-") && revision != want {
            stale += 1;
        }
        revisions.entry(stream.clone()).or_default().push(revision);
        if by_id.insert(id, (stream, revision, position)).is_some() {
            duplicate_ids += 1;
        }
    }
    let (mut duplicated, mut skipped) = (0, 0);
    for revs in revisions.values_mut() {
        revs.sort_unstable();
        let before = revs.len();
        revs.dedup();
        duplicated += (before - revs.len()) as u64;
        let max = revs.last().copied().unwrap_or(0);
        skipped += max + 1 - revs.len() as u64;
    }
    let mut lost = 0;
    for a in &book.acked {
        for (stream, id, revision, position) in &a.events {
            if by_id.get(id) != Some(&(stream.clone(), *revision, *position)) {
                lost += 1;
            }
        }
    }
    let mut commands_lost = 0;
    for (id, (stream, revision)) in &book.commands {
        match by_id.get(&format!("{id}.0")) {
            Some((s, r, _)) if s == stream && r == revision => {}
            _ => commands_lost += 1,
        }
    }
    report.commands_lost = commands_lost;
    let mut partial = 0;
    for attempt in &book.attempts {
        let ids: Vec<&String> = attempt.streams.iter().flat_map(|(_, _, ids)| ids).collect();
        let stored = ids.iter().filter(|id| by_id.contains_key(**id)).count();
        if stored != 0 && stored != ids.len() {
            partial += 1;
        }
    }
    report.lost = lost;
    report.revisions_duplicated = duplicated;
    report.revisions_skipped = skipped;
    report.stale_appends = stale;
    report.partial_appends = partial;
    report.duplicate_event_ids = duplicate_ids;
    Ok(())
}

/// Waits until the projection has handled every event and nothing is in flight.
fn drain(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let b = get(url, "/v1/stats")?["bindings"][BINDING].clone();
        if b["lag"] == 0 && b["in_flight"] == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the projection did not catch up within 120 s: {b}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Compares the projection's per-stream counts with the events stored.
fn check_projection(url: &str, report: &mut Report) -> anyhow::Result<()> {
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for e in read_store(url)? {
        *want
            .entry(format!(
                "count/{}",
                e["stream"].as_str().unwrap_or_default()
            ))
            .or_default() += 1;
    }
    let kv = get(url, "/v1/plugins/counter/kv?prefix=count&limit=1000")?;
    let mut have: BTreeMap<String, u64> = BTreeMap::new();
    for e in kv["entries"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default().to_owned();
        have.insert(key, super::chaos_deliver::counter_value(e)?);
    }
    report.projection_total = have.get("count").copied().unwrap_or(0);
    let total: u64 = want.values().sum();
    let mut mismatches = u64::from(report.projection_total != total);
    for (key, n) in &want {
        if have.get(key) != Some(n) {
            mismatches += 1;
        }
    }
    mismatches += have
        .keys()
        .filter(|k| k.as_str() != "count" && !want.contains_key(*k))
        .count() as u64;
    report.projection_mismatches = mismatches;
    Ok(())
}
