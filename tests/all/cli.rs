//! The `weir` command line as a person uses it: publish, tail, stats, check, bench, and bad input.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Server, plugin, plugin_toml, wait_for, weir, weir_bin};

#[test]
fn publish_and_tail_from_a_second_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.orders]\n{}",
        plugin_toml("noop", "")
    );
    let server = Server::start(dir.path(), &config);
    let url = server.url.as_str();
    let (code, out, err) = weir(
        &[
            "publish",
            "orders",
            "hello",
            "--key",
            "k1",
            "-H",
            "trace=abc",
            "--server",
            url,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("published to orders at offset 0 (id "),
        "{out}"
    );
    let (code, out, err) = weir(
        &[
            "publish", "orders", "again", "--id", "my-id", "--json", "--server", url,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (answer["offset"].as_u64(), answer["id"].as_str()),
        (Some(1), Some("my-id"))
    );

    let (code, out, err) = weir(&["tail", "orders", "--server", url], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "0 key=k1 hello\n1 again\n");
    let (_, read) = server.get("/v1/destinations/orders/messages");
    assert_eq!(
        read["messages"][0]["headers"][0],
        serde_json::json!(["trace", "abc"])
    );

    let (code, out, _) = weir(&["stats", "--json", "--server", url], dir.path());
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["destinations"]["orders"]["messages"], 2);

    // Bad input: a clear error, exit 1, nothing stored.
    let (code, _, err) = weir(&["publish", "nowhere", "x", "--server", url], dir.path());
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: no queue or topic named `nowhere` (unknown_destination, HTTP 404)"
    );
    let (code, _, err) = weir(
        &["publish", "orders", "x", "-H", "novalue", "--server", url],
        dir.path(),
    );
    assert_eq!(code, 2, "usage errors exit 2");
    assert!(
        err.contains("expected name=value, found \"novalue\""),
        "{err}"
    );
    assert_eq!(server.stats()["destinations"]["orders"]["messages"], 2);
}

#[test]
fn client_commands_say_when_no_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = weir(&["stats", "--server", "http://127.0.0.1:9"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach weir at http://127.0.0.1:9 (is `weir run` running?"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["frobnicate"][..],
        &["publish"],
        &["bench", "invoke", "--calls", "many"],
    ] {
        let (code, _, err) = weir(args, dir.path());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains("--help"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn check_validates_configs_and_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "[queues.q]\n{}\n[[bindings]]\nsource = \"q\"\nplugin = \"noop\"\n",
        plugin_toml("noop", "")
    );
    std::fs::write(dir.path().join("weir.toml"), &good).unwrap();
    let (code, out, err) = weir(&["check"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "ok: 2 destinations, 1 plugins, 1 bindings");
    assert!(
        !dir.path().join(".weir").exists(),
        "check validates without creating the data directory"
    );

    std::fs::write(
        dir.path().join("weir.toml"),
        good.replace("source =", "sorce ="),
    )
    .unwrap();
    let (code, _, err) = weir(&["check"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "weir.toml:7:1: unknown key `sorce` in [[bindings]] #1; did you mean `source`?"
        ),
        "{err}"
    );

    let (code, _, err) = weir(&["check", "--config", "absent.toml"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("absent.toml: cannot read config file"),
        "{err}"
    );
}

#[test]
fn bench_aggregate_prints_one_json_object_last() {
    let dir = tempfile::tempdir().unwrap();
    let component = plugin("order-aggregate").display().to_string();
    let (code, out, err) = weir(
        &[
            "bench",
            "aggregate",
            "--component",
            &component,
            "--commands",
            "200",
            "--rate",
            "2000",
            "--instances",
            "4",
            "--snapshot-every",
            "10",
            "--long-stream",
            "200",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["scenario"], "aggregate");
    assert_eq!(last["long_stream_events"], 250);
    // Every cold command loaded a snapshot (each order has more than 10 events by then); a
    // command decided again after a conflict loads once more.
    let loads = last["snapshot_loads"].as_u64().unwrap();
    let conflicts = last["conflicts"].as_u64().unwrap();
    assert!(loads >= 200 && loads <= 200 + conflicts, "{last}");
    let (p50, p99) = (
        last["warm_p50_us"].as_u64().unwrap(),
        last["warm_p99_us"].as_u64().unwrap(),
    );
    assert!(p50 > 0 && p50 <= p99, "{last}");
    let (code, _, err) = weir(
        &["bench", "aggregate", "--component", "nope.wasm"],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("no aggregate component at `nope.wasm`"),
        "{err}"
    );
}

#[test]
fn bench_invoke_prints_one_json_object_last() {
    let dir = tempfile::tempdir().unwrap();
    let noop = plugin("noop").display().to_string();
    let (code, out, err) = weir(
        &[
            "bench", "invoke", "--plugin", &noop, "--calls", "2000", "--warmup", "100", "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["scenario"], "invoke");
    assert_eq!(last["payload_bytes"], 1024);
    assert_eq!(last["calls"], 2000);
    let (p50, p99) = (
        last["us_per_call_p50"].as_f64().unwrap(),
        last["us_per_call_p99"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{last}");

    let (code, _, err) = weir(&["bench", "invoke", "--plugin", "nope.wasm"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "plugin `nope.wasm` not found; build the example plugins with `scripts/build-plugins`"
        ),
        "{err}"
    );
}

#[test]
fn chaos_append_survives_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("chaos");
    let store = store.display().to_string();
    let args = [
        "chaos",
        "--scenario",
        "append",
        "--kills",
        "3",
        "--max-run-ms",
        "150",
        "--dir",
        &store,
        "--json",
    ];
    let (code, out, err) = weir(&args, dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["kills"], 3);
    for field in ["lost", "duplicates", "reordered", "corrupt"] {
        assert_eq!(last[field], 0, "{field}: {last}");
    }
    assert!(last["acked"].as_u64().unwrap() > 0, "{last}");
    // Both ways of publishing were killed under load: the streaming publish and POSTs.
    let streaming = last["acked_streaming"].as_u64().unwrap();
    assert!(streaming > 0, "{last}");
    assert!(last["acked"].as_u64().unwrap() > streaming, "{last}");
    assert!(last["records_found"].as_u64().unwrap() >= last["acked"].as_u64().unwrap());
}

#[test]
fn bench_e2e_prints_one_json_object_last() {
    let dir = tempfile::tempdir().unwrap();
    let noop = plugin("noop").display().to_string();
    let store = dir.path().display().to_string();
    let base = ["bench", "e2e", "--plugin", &noop, "--dir", &store, "--json"];
    // Throughput mode, then latency mode at a held rate.
    for extra in [
        &["--events", "3000"][..],
        &["--events", "1000", "--rate", "5000"],
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, out, err) = weir(&args, dir.path());
        assert_eq!(code, 0, "{out}\n{err}");
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(last["scenario"], "e2e");
        assert_eq!(last["guarantee"], "at-least-once");
        assert_eq!(last["payload_bytes"], 1024);
        assert_eq!(last["fsync"], "always");
        assert!(last["events_per_sec"].as_f64().unwrap() > 0.0, "{last}");
        let (p50, p99) = (
            last["p50_ms"].as_f64().unwrap(),
            last["p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{last}");
        if extra.contains(&"--rate") {
            assert_eq!(last["events"], 1000);
            assert_eq!(last["rate"], 5000);
        } else {
            assert_eq!(last["events"], 3000);
            assert!(last["rate"].is_null(), "{last}");
        }
    }
    // Through the network: a `weir run` child, the streaming publish, the binding's cursor.
    for extra in [
        &["--events", "3000"][..],
        &["--events", "1000", "--rate", "5000"],
    ] {
        let args: Vec<&str> = base
            .iter()
            .chain(&["--network"])
            .chain(extra)
            .copied()
            .collect();
        let (code, out, err) = weir(&args, dir.path());
        assert_eq!(code, 0, "{out}\n{err}");
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(
            (&last["scenario"], &last["over"]),
            (&serde_json::json!("e2e"), &serde_json::json!("websocket"))
        );
        assert!(last["events_per_sec"].as_f64().unwrap() > 0.0, "{last}");
        let (p50, p99) = (
            last["latency_p50_ms"].as_f64().unwrap(),
            last["latency_p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{last}");
        assert!(last["server_cpu_cores"].as_f64().unwrap() > 0.0, "{last}");
    }
    let args: Vec<&str> = base
        .iter()
        .chain(&["--network", "--backlog"])
        .copied()
        .collect();
    let (code, _, err) = weir(&args, dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("--network measures live publishing"), "{err}");
    // Two prefills of the source and `out`, measured in one invocation.
    let counter = plugin("counter").display().to_string();
    let args = [
        "bench",
        "e2e",
        "--plugin",
        &counter,
        "--effects",
        "--guarantee",
        "exactly-once",
        "--events",
        "500",
        "--prefill",
        "300,1000",
        "--dir",
        &store,
        "--json",
    ];
    let (code, out, err) = weir(&args, dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("prefilled `bench` and `out` with 1000 records each"),
        "{err}"
    );
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["prefills"], serde_json::json!([300, 1000]), "{last}");
    let runs = last["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{last}");
    for (run, prefill) in runs.iter().zip([300, 1000]) {
        assert_eq!(run["prefill"], prefill, "{last}");
        assert!(run["events_per_sec"].as_f64().unwrap() > 0.0, "{last}");
        assert!(run["p50_ms"].as_f64().unwrap() > 0.0, "{last}");
    }
    let ratio = &last["largest_to_smallest"];
    assert_eq!(ratio["prefill"], serde_json::json!([1000, 300]), "{last}");
    assert!(ratio["events_per_sec"].as_f64().unwrap() > 0.0, "{last}");
    assert!(ratio["p99_ms"].as_f64().unwrap() > 0.0, "{last}");

    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "the store is removed: {leftovers:?}");
}

#[test]
fn bench_removes_its_directory_when_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().display().to_string();
    // Killed if the test fails before the benchmark exits.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Child(
        Command::new(weir_bin())
            .args(["bench", "append", "--records", "1000000000", "--dir", &base])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = wait_for("the benchmark's log", Duration::from_secs(30), || {
        let entries = std::fs::read_dir(dir.path()).unwrap();
        let bench = entries.map(|e| e.unwrap().path()).find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(".weir-bench-append-")
        })?;
        bench.join("log").exists().then_some(bench)
    });
    let pid = child.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = wait_for("the benchmark to exit", Duration::from_secs(30), || {
        child.0.try_wait().unwrap()
    });
    let err = std::io::read_to_string(child.0.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(!log.exists(), "{} is removed: {err}", log.display());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing is left"
    );
}

#[test]
fn bench_swap_prints_one_json_object_last() {
    let dir = tempfile::tempdir().unwrap();
    let tagger = plugin("tagger").display().to_string();
    let store = dir.path().display().to_string();
    for (tier, from_memory) in [("memory", 4), ("disk", 0)] {
        let args = [
            "bench",
            "swap",
            "--plugin",
            &tagger,
            "--dir",
            &store,
            "--rate",
            "2000",
            "--baseline-seconds",
            "1",
            "--seconds",
            "1",
            // Room for the compile to finish while events still flow, on a busy machine.
            "--compiled-seconds",
            "3",
            "--swaps",
            "4",
            "--compiled-swaps",
            "1",
            "--cache-tier",
            tier,
            "--json",
        ];
        let (code, out, err) = weir(&args, dir.path());
        assert_eq!(code, 0, "{out}\n{err}");
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(last["bench"], "swap");
        assert_eq!(last["cache_tier"], tier);
        assert_eq!(last["events"], 10_000);
        assert_eq!(last["outputs"], 10_000);
        for field in ["lost", "duplicates", "reordered"] {
            assert_eq!(last[field], 0, "{field}: {last}");
        }
        // The two versions (deployed before the load), then one never seen.
        assert_eq!(last["swaps"], 5, "{last}");
        assert_eq!(last["swaps_from_cache"], 4, "{last}");
        assert_eq!(last["swaps_from_cache_memory"], from_memory, "{last}");
        assert_eq!(last["swaps_compiled"], 1, "{last}");
        assert_eq!(last["versions_seen"], 3, "{last}");
        let (p50, p99) = (
            last["cached_swap_to_new_version_ms_p50"].as_f64().unwrap(),
            last["cached_swap_to_new_version_ms_p99"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{last}");
        assert!(last["p99_latency_ratio_during_swaps"].as_f64().unwrap() > 0.0);
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "the store is removed: {leftovers:?}");
}

#[test]
fn chaos_deliver_exactly_once_survives_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("chaos").display().to_string();
    let counter = plugin("counter").display().to_string();
    let args = [
        "chaos",
        "--scenario",
        "deliver",
        "--guarantee",
        "exactly-once",
        "--kills",
        "3",
        "--max-run-ms",
        "200",
        "--plugin",
        &counter,
        "--dir",
        &store,
        "--json",
    ];
    let (code, out, err) = weir(&args, dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["guarantee"], "exactly-once");
    assert_eq!(last["kills"], 3);
    assert_eq!(last["lost"], 0, "{last}");
    assert_eq!(last["duplicates"], 0, "{last}");
    let published = last["published"].as_u64().unwrap();
    assert!(published > 0, "{last}");
    assert_eq!(last["handled_effects"]["counter"], published, "{last}");
    assert_eq!(last["handled_effects"]["outputs"], published, "{last}");
}

#[test]
fn chaos_streams_keeps_revisions_and_the_projection_through_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("chaos").display().to_string();
    let counter = plugin("counter").display().to_string();
    let args = [
        "chaos",
        "--scenario",
        "streams",
        "--kills",
        "4",
        "--max-run-ms",
        "300",
        "--plugin",
        &counter,
        "--dir",
        &store,
        "--json",
    ];
    let (code, out, err) = weir(&args, dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["scenario"], "streams");
    assert_eq!(last["kills"], 4);
    for field in [
        "lost",
        "revisions_duplicated",
        "revisions_skipped",
        "stale_appends",
        "partial_appends",
        "duplicate_event_ids",
        "projection_mismatches",
        "commands_lost",
        "commands_doubled",
        "aggregate_mismatches",
    ] {
        assert_eq!(last[field], 0, "{field}: {last}");
    }
    assert!(last["events_acked"].as_u64().unwrap() > 0, "{last}");
    assert!(last["commands_acked"].as_u64().unwrap() > 0, "{last}");
    assert!(
        last["conflicts"].as_u64().unwrap() > 0,
        "appends raced: {last}"
    );
    assert_eq!(last["projection_total"], last["events_stored"], "{last}");
}
