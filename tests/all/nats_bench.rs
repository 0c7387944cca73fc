//! `weir bench e2e --broker nats` and `weir chaos --scenario cluster` through the real binary:
//! each starts its own 3-node NATS JetStream cluster and its `weir run` hosts, and reports one
//! JSON object last.

use serde_json::Value;

use crate::nats_support;
use crate::support::{plugin, weir};

fn last_json(out: &str, err: &str) -> Value {
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"))
}

#[test]
fn bench_e2e_on_nats_reports_weir_the_embedded_store_and_the_ceiling() {
    let _turn = nats_support::one_at_a_time();
    nats_support::nats_server();
    let dir = tempfile::tempdir().unwrap();
    let noop = plugin("noop");
    let (code, out, err) = weir(
        &[
            "bench",
            "e2e",
            "--broker",
            "nats",
            "--events",
            "2000",
            "--plugin",
            noop.to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let j = last_json(&out, &err);
    assert_eq!(j["scenario"], "e2e", "{j}");
    assert_eq!(j["broker"], "nats", "{j}");
    assert_eq!(j["events"], 2000, "{j}");
    assert_eq!(j["payload_bytes"], 1024, "{j}");
    for part in ["nats", "embedded", "ceiling"] {
        let p = &j[part];
        assert_eq!(p["events"], 2000, "{part}: {j}");
        assert!(p["events_per_sec"].as_f64().unwrap() > 0.0, "{part}: {j}");
        let (p50, p99) = (
            p["latency_p50_ms"].as_f64().unwrap(),
            p["latency_p99_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99, "{part}: {j}");
    }
    // Every event handled: the cursors passed every one, on the hosts' counters too.
    assert_eq!(j["nats"]["handled"], 2000, "{j}");
    assert_eq!(j["ceiling"]["handled"], 2000, "{j}");
    let per_host: Vec<u64> = j["nats"]["handled_per_host"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(per_host.len(), 2, "{j}");
    assert!(per_host.iter().sum::<u64>() >= 2000, "{j}");
    assert!(j["nats_over_ceiling"].as_f64().unwrap() > 0.0, "{j}");
    // Its directories are gone.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `weir chaos --scenario cluster --kills 2 --json` with `extra` arguments; its report.
fn chaos_cluster(extra: &[&str]) -> Value {
    let _turn = nats_support::one_at_a_time();
    nats_support::nats_server();
    let dir = tempfile::tempdir().unwrap();
    let counter = plugin("counter");
    let mut args = vec![
        "chaos",
        "--scenario",
        "cluster",
        "--kills",
        "2",
        "--plugin",
        counter.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = weir(&args, dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    last_json(&out, &err)
}

#[test]
fn chaos_cluster_survives_killed_hosts_and_nodes() {
    let j = chaos_cluster(&[]);
    assert_eq!(j["scenario"], "cluster", "{j}");
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["kills"], 2, "{j}");
    assert_eq!(
        j["host_kills"].as_u64().unwrap() + j["node_kills"].as_u64().unwrap(),
        2,
        "{j}"
    );
    let acked = j["inputs_acked"].as_u64().unwrap();
    assert!(acked > 0, "{j}");
    assert_eq!(j["inputs_stored"], acked, "{j}");
    assert_eq!(j["outputs"], acked, "{j}");
    for zero in [
        "inputs_lost",
        "inputs_duplicated",
        "inputs_unexpected",
        "duplicates",
        "missing",
        "order_violations",
        "count_mismatches",
    ] {
        assert_eq!(j[zero], 0, "{zero}: {j}");
    }
}

/// At least once across the same kills: every acknowledged input is handled (its output in
/// `out`, in per-key order by first copy) and no count is below its key's inputs; copies
/// handled twice are reported, not failures.
#[test]
fn chaos_cluster_at_least_once_handles_every_input_across_kills() {
    let j = chaos_cluster(&["--guarantee", "at-least-once"]);
    assert_eq!(j["guarantee"], "at-least-once", "{j}");
    assert_eq!(j["ok"], true, "{j}");
    let acked = j["inputs_acked"].as_u64().unwrap();
    assert!(acked > 0, "{j}");
    assert_eq!(j["inputs_stored"], acked, "{j}");
    assert!(j["outputs"].as_u64().unwrap() >= acked, "{j}");
    for zero in [
        "inputs_lost",
        "missing",
        "order_violations",
        "count_mismatches",
    ] {
        assert_eq!(j[zero], 0, "{zero}: {j}");
    }
}

#[test]
fn chaos_cluster_refuses_at_most_once() {
    let dir = tempfile::tempdir().unwrap();
    let counter = plugin("counter");
    let (code, out, err) = weir(
        &[
            "chaos",
            "--scenario",
            "cluster",
            "--guarantee",
            "at-most-once",
            "--plugin",
            counter.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(err.contains("exactly-once or at-least-once"), "{err}");
}
