//! What `weir bench e2e` prints: human lines per run, a comparison of the largest and smallest
//! prefill when there are several runs, and with `--json` one JSON object as the last line.
//! One run prints every figure at the object's top level; several print the settings at the
//! top, each run's figures under `runs`, and the ratios under `largest_to_smallest`.

use serde_json::{Map, Value, json};

use super::super::{percentile, round3};
use super::{E2eArgs, Measured};

/// A latency percentile in milliseconds, from sorted nanoseconds.
fn ms(v: &[u64], p: f64) -> f64 {
    round3(percentile(v, p) as f64 / 1e6)
}

impl Measured {
    fn seconds(&self) -> f64 {
        self.elapsed_ns as f64 / 1e9
    }

    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.seconds()
    }

    fn rate_held(&self) -> f64 {
        self.events as f64 / (self.publish_span_ns.max(1) as f64 / 1e9)
    }

    fn cores(&self) -> Option<f64> {
        self.cpu_seconds.map(|c| round3(c / self.seconds()))
    }
}

fn mode(args: &E2eArgs) -> String {
    format!("{:?}", args.publish).to_lowercase()
}

/// One run's lines.
pub(super) fn human(args: &E2eArgs, m: &Measured) {
    let mode = mode(args);
    println!(
        "events:       {} x {} payload bytes, guarantee {}, fsync = always, plugin {}{}",
        m.events,
        args.payload_bytes,
        args.guarantee,
        args.plugin().display(),
        if args.effects {
            " (effects: a kv increment and a publish to `out` per event)"
        } else {
            ""
        }
    );
    if m.prefill > 0 {
        println!(
            "prefill:      {} records of {} payload bytes in the source{}, not consumed",
            m.prefill,
            args.prefill_payload_bytes,
            if args.effects { " and in `out`" } else { "" }
        );
    }
    match (args.rate, args.backlog) {
        (Some(rate), _) => println!(
            "publish:      {mode}, {rate} events/s asked, {:.0} held (publish starts)",
            m.rate_held()
        ),
        (None, true) => println!(
            "publish:      {mode}, {} publishers, all before the binding started (consumption measured alone)",
            args.publishers
        ),
        (None, false) => println!(
            "publish:      {mode}, {} publishers, each as fast as it is acknowledged",
            args.publishers
        ),
    }
    println!(
        "handled:      {:.0} events/s ({:.2} s from the first publish to the last event handled durably; {} CPU cores busy)",
        m.events_per_sec(),
        m.seconds(),
        m.cores().map_or("?".into(), |c| format!("{c:.2}"))
    );
    let line = |name: &str, v: &[u64]| {
        println!(
            "{name:<13} p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            ms(v, 0.5),
            ms(v, 0.99),
            ms(v, 0.999),
            ms(v, 1.0)
        );
    };
    let timeline: Vec<String> = m
        .timeline
        .iter()
        .map(|(n, t)| format!("{n} at {:.2} s", *t as f64 / 1e9))
        .collect();
    println!("progress:     {}", timeline.join(", "));
    println!(
        "fsyncs:       {} ({:.1} events per fsync)",
        m.fsyncs,
        m.events as f64 / m.fsyncs.max(1) as f64
    );
    line("latency:", &m.latency);
    line("  publish:", &m.publish);
    line("  to handler:", &m.to_handler);
    line("  to durable:", &m.to_durable);
    println!(
        "latency is from the start of the publish call to the delivery engine observing the event's commit durable (publish: until the publish is acknowledged durably; to handler: until the handler returned; to durable: until the commit was seen durable, sampled every {} us)",
        if args.rate.is_some() { 100 } else { 1000 }
    );
}

/// The run with the smallest prefill (the first of equals) and the one with the largest (the
/// last of equals), when there are several runs.
fn extremes(runs: &[Measured]) -> Option<(&Measured, &Measured)> {
    if runs.len() < 2 {
        return None;
    }
    let smallest = runs.iter().min_by_key(|m| m.prefill)?;
    let largest = runs.iter().max_by_key(|m| m.prefill)?;
    Some((smallest, largest))
}

/// Largest-prefill figure over smallest-prefill figure: events/s (below 1: slower) and latency
/// percentiles (above 1: slower).
fn ratios(smallest: &Measured, largest: &Measured) -> Map<String, Value> {
    let ratio = |a: f64, b: f64| if b > 0.0 { round3(a / b) } else { f64::NAN };
    let mut out = Map::new();
    out.insert("prefill".into(), json!([largest.prefill, smallest.prefill]));
    out.insert(
        "events_per_sec".into(),
        json!(ratio(largest.events_per_sec(), smallest.events_per_sec())),
    );
    for (name, p) in [("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999)] {
        let r = ratio(ms(&largest.latency, p), ms(&smallest.latency, p));
        out.insert(name.into(), json!(r));
    }
    out
}

/// With several runs: each run's headline figures, and the largest prefill against the smallest.
pub(super) fn compare(runs: &[Measured]) {
    let Some((smallest, largest)) = extremes(runs) else {
        return;
    };
    println!("== by prefill");
    for m in runs {
        println!(
            "prefill {:>11}: {:.0} events/s, latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            m.prefill,
            m.events_per_sec(),
            ms(&m.latency, 0.5),
            ms(&m.latency, 0.99),
            ms(&m.latency, 0.999)
        );
    }
    let r = ratios(smallest, largest);
    let f = |k: &str| r[k].as_f64().map_or("?".into(), |x| format!("{x:.3}"));
    println!(
        "prefill {} against {}: events/s x{}, latency p50 x{}, p99 x{}, p99.9 x{}",
        largest.prefill,
        smallest.prefill,
        f("events_per_sec"),
        f("p50_ms"),
        f("p99_ms"),
        f("p999_ms")
    );
}

/// Figures of one run.
fn figures(args: &E2eArgs, m: &Measured) -> Map<String, Value> {
    let value = json!({
        "prefill": m.prefill,
        "events_per_sec": m.events_per_sec().round(),
        "p50_ms": ms(&m.latency, 0.5),
        "p99_ms": ms(&m.latency, 0.99),
        "p999_ms": ms(&m.latency, 0.999),
        "max_ms": ms(&m.latency, 1.0),
        "publish_p50_ms": ms(&m.publish, 0.5),
        "publish_p99_ms": ms(&m.publish, 0.99),
        "to_handler_p50_ms": ms(&m.to_handler, 0.5),
        "to_handler_p99_ms": ms(&m.to_handler, 0.99),
        "to_durable_p50_ms": ms(&m.to_durable, 0.5),
        "to_durable_p99_ms": ms(&m.to_durable, 0.99),
        "rate_held": args.rate.map(|_| m.rate_held().round()),
        "fsyncs": m.fsyncs,
        "seconds": round3(m.seconds()),
        "cpu_cores_busy": m.cores(),
        "handled_at_seconds": m.timeline.iter().map(|(n, t)| json!([n, round3(*t as f64 / 1e9)])).collect::<Vec<_>>(),
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

/// The settings every run shares.
fn settings(args: &E2eArgs, events: u64) -> Map<String, Value> {
    let value = json!({
        "scenario": "e2e",
        "guarantee": args.guarantee.to_string(),
        "payload_bytes": args.payload_bytes,
        "events": events,
        "fsync": "always",
        "rate": args.rate,
        "publishers": args.publishers,
        "publish": mode(args),
        "backlog": args.backlog,
        "plugin": args.plugin().display().to_string(),
        "effects": args.effects,
        "prefill_payload_bytes": args.prefill_payload_bytes,
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

/// The JSON object of the whole invocation.
pub(super) fn json(args: &E2eArgs, runs: &[Measured]) -> Value {
    let events = runs.first().map_or(0, |m| m.events);
    let mut out = settings(args, events);
    match (runs, extremes(runs)) {
        ([one], _) => out.extend(figures(args, one)),
        (_, Some((smallest, largest))) => {
            out.insert(
                "prefills".into(),
                json!(runs.iter().map(|m| m.prefill).collect::<Vec<_>>()),
            );
            let each: Vec<Value> = runs
                .iter()
                .map(|m| Value::Object(figures(args, m)))
                .collect();
            out.insert("runs".into(), Value::Array(each));
            out.insert(
                "largest_to_smallest".into(),
                Value::Object(ratios(smallest, largest)),
            );
        }
        _ => {}
    }
    Value::Object(out)
}
