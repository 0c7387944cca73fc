//! `max_depth` through the real binary: publishers are refused (429 `backpressure`) while a
//! destination's slowest consumer lags by the limit, handlers' publishes are not, and publishing
//! works again once the consumer catches up.

use serde_json::json;

use crate::support::{Server, plugin_toml, weir};

/// Queue `jobs` (max_depth 5) consumed by binding `work` running `plugin`; queue `orders`
/// consumed by `enrich`, which forwards to `jobs`.
fn config(plugin: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[queues.jobs]
max_depth = 5
[queues.orders]
[queues.free]

{fail}{noop}{enrich}
[[bindings]]
name = "work"
source = "jobs"
plugin = "{plugin}"
max_attempts = 1000
ordering = "fifo"

[[bindings]]
source = "orders"
plugin = "enrich"
"#,
        fail = plugin_toml("fail", ""),
        noop = plugin_toml("noop", ""),
        enrich = plugin_toml("enrich", "publish = [\"jobs\"]"),
    )
}

#[test]
fn publishers_are_told_to_back_off_at_max_depth() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config("fail"));
    // The first message fails and is retried (for up to 1000 attempts): under fifo, `work`
    // does not move.
    let retryable = [("weir-header-retryable", "true")];
    for i in 0..5 {
        server.publish("jobs", &format!("job {i}"), &retryable);
    }
    let (status, headers, body) =
        server.post_with_headers("/v1/destinations/jobs/messages", b"job 5", &retryable);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "backpressure");
    assert_eq!(
        body["error"]["message"],
        "`jobs` is full: 5 messages not yet consumed, max_depth is 5; retry later"
    );
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let stats = server.stats();
    assert_eq!(
        stats["destinations"]["jobs"]["messages"], 5,
        "nothing stored"
    );
    assert_eq!(stats["destinations"]["jobs"]["depth"], 5);
    assert_eq!(stats["destinations"]["jobs"]["max_depth"], 5);
    assert!(
        stats["destinations"]["free"].get("max_depth").is_none(),
        "no limit, no field"
    );

    let (code, _, err) = weir(
        &["publish", "jobs", "job 5", "--server", &server.url],
        dir.path(),
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim(),
        "error: `jobs` is full: 5 messages not yet consumed, max_depth is 5; retry later (backpressure, HTTP 429, retry after 1s)"
    );
    // Other destinations are not affected.
    server.publish("free", "x", &[]);

    // A handler's publishes to a full destination are not refused: they commit with the
    // acknowledgement of their upstream message.
    for i in 0..2 {
        server.publish(
            "orders",
            &format!("order {i}"),
            &[("weir-header-forward-to", "jobs")],
        );
    }
    server.wait_binding("orders.enrich", "acked", 2);
    // Read after `acked` reached 2: a stats document reads destinations before bindings.
    let stats = server.stats();
    assert_eq!(stats["bindings"]["orders.enrich"]["dead_lettered"], 0);
    assert_eq!(stats["destinations"]["jobs"]["messages"], 7);
    assert_eq!(stats["destinations"]["jobs"]["depth"], 7);
    assert_eq!(stats["bindings"]["work"]["cursor"], 0, "still stuck");
    server.stop();

    // The consumer is fixed and catches up: publishing works again.
    std::fs::write(dir.path().join("weir.toml"), config("noop")).unwrap();
    let server = Server::start_existing(dir.path());
    let stats = server.wait_binding("work", "acked", 7);
    assert_eq!(stats["destinations"]["jobs"]["depth"], 0);
    let body = server.publish("jobs", "job 5", &[]);
    assert_eq!(body["offset"], json!(7));
}
