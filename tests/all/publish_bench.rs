//! `weir bench publish` through the real binary: it starts its own `weir run`, publishes over
//! HTTP and reports one JSON object last, with the server's fsyncs from `/metrics`.

#[test]
fn bench_publish_drives_a_server_over_the_network_and_reports_json() {
    for client in ["minimal", "hyper"] {
        publish_with(client);
    }
}

fn publish_with(client: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = crate::support::weir(
        &[
            "bench",
            "publish",
            "--count",
            "300",
            "--connections",
            "8",
            "--payload-bytes",
            "100",
            "--http-client",
            client,
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["scenario"], "publish");
    assert_eq!(last["http_client"], client);
    assert_eq!(last["messages"], 300);
    assert!(last["msgs_per_sec"].as_f64().unwrap() > 0.0, "{last}");
    assert!(last["ack_p50_ms"].as_f64().unwrap() > 0.0, "{last}");
    // Durable acknowledgements: the server fsynced, at most once per message.
    let fsyncs = last["fsyncs"].as_u64().expect("fsyncs from /metrics");
    assert!((1..=300 + 50).contains(&fsyncs), "{last}");
    assert!(last["server_cpu_cores"].as_f64().is_some(), "{last}");
    // Its temporary directory is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bench_publish_says_why_when_the_server_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = crate::support::weir(
        &["bench", "publish", "--count", "10", "--destination", "nope"],
        dir.path(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("404") && err.contains("nope"), "{err}");
}

#[test]
fn bench_publish_over_the_websocket_acknowledges_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = crate::support::weir(
        &[
            "bench",
            "publish",
            "--protocol",
            "ws",
            "--in-flight",
            "64",
            "--count",
            "2000",
            "--payload-bytes",
            "100",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["protocol"], "ws");
    assert_eq!(last["messages"], 2000);
    assert_eq!(last["in_flight"], 64);
    assert!(last["ack_p50_ms"].as_f64().unwrap() > 0.0, "{last}");
    let fsyncs = last["fsyncs"].as_u64().expect("fsyncs from /metrics");
    assert!((1..=2000 + 50).contains(&fsyncs), "{last}");
}
