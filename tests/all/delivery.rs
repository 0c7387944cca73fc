//! The delivery engine through the real binary: topic fan-out to independent subscriptions,
//! every failure class reaching its dead-letter queue with its metadata, a slow plugin slowing
//! only its own binding, exactly-once effects, and memory bounded behind a stuck binding.

use serde_json::{Value, json};

use crate::support::{Server, plugin_toml};

fn header<'v>(record: &'v Value, name: &str) -> Option<&'v str> {
    record["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[test]
fn every_subscription_of_a_topic_gets_every_message_with_its_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[topics.events]
[queues.slow]
{counter}{fail}{spin}
[[bindings]]
name = "count"
source = "events"
plugin = "counter"
guarantee = "exactly-once"
[[bindings]]
name = "check"
source = "events"
plugin = "fail"
guarantee = "at-least-once"
max_attempts = 2
backoff = {{ initial = "1ms", jitter = 0.0 }}
[[bindings]]
name = "stuck"
source = "events"
plugin = "spin"
guarantee = "at-most-once"
max_attempts = 1
dead_letter = "slow"
"#,
        counter = plugin_toml("counter", ""),
        fail = plugin_toml("fail", ""),
        spin = plugin_toml("spin", "timeout_ms = 200"),
    );
    let server = Server::start(dir.path(), &config);
    for i in 0..20 {
        server.publish(
            "events",
            &format!("e{i}"),
            &[("weir-key", &format!("k{}", i % 3))],
        );
    }
    // The counter and the failing check finish everything while `stuck` still spins through
    // its 200 ms timeouts: a slow plugin slows only its own binding.
    let stats = server.wait_binding("count", "acked", 20);
    server.wait_binding("check", "dead_lettered", 20);
    assert!(
        stats["bindings"]["stuck"]["dead_lettered"]
            .as_u64()
            .unwrap()
            < 20,
        "{stats}"
    );
    // One binding's view, as in the stats.
    let (status, count) = server.get("/v1/bindings/count");
    assert_eq!(status, 200, "{count}");
    assert_eq!(
        (
            &count["source"],
            &count["cursor"],
            &count["acked"],
            &count["lag"]
        ),
        (&json!("events"), &json!(20), &json!(20), &json!(0)),
        "{count}"
    );
    let (status, body) = server.get("/v1/bindings/nope");
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("unknown_binding")),
        "{body}"
    );
    let (_, kv) = server.get("/v1/plugins/counter/kv?prefix=count");
    let total = kv["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "count")
        .map(|e| e["value_hex"].clone());
    assert_eq!(
        total,
        Some("1400000000000000".into()),
        "20, once each: {kv}"
    );
    // Each subscription has its own dead-letter queue and cursor.
    let (_, dlq) = server.get("/v1/destinations/check.dlq/messages?limit=100");
    let dead = dlq["messages"].as_array().unwrap();
    assert_eq!(dead.len(), 20);
    assert!(
        dead.iter()
            .all(|d| header(d, "weir-dlq-binding") == Some("check"))
    );
    let stats = server.wait_binding("stuck", "dead_lettered", 20);
    for b in ["count", "check", "stuck"] {
        assert_eq!(stats["bindings"][b]["cursor"], 20, "{b}: {stats}");
    }
    let (_, slow) = server.get("/v1/destinations/slow/messages?limit=100");
    let slow = slow["messages"].as_array().unwrap();
    assert_eq!(slow.len(), 20);
    assert_eq!(header(&slow[0], "weir-dlq-class"), Some("timeout"));
}

#[test]
fn each_failure_class_reaches_the_dead_letter_queue_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
    let cases = [
        ("trap", "", "trap", "2"),
        ("spin", "timeout_ms = 100", "timeout", "2"),
        ("hog", "memory = \"16MiB\"", "out-of-memory", "2"),
        ("fail", "", "handler-error", "1"),
    ];
    for (plugin, limits, _, _) in cases {
        config.push_str(&format!(
            "[queues.{plugin}]\n{}[[bindings]]\nsource = \"{plugin}\"\nplugin = \"{plugin}\"\nmax_attempts = 2\nbackoff = {{ initial = \"1ms\" }}\n",
            plugin_toml(plugin, limits)
        ));
    }
    // Fuel: the same endless loop, metered.
    config.push_str(&format!(
        "[queues.fuel]\n[plugins.metered]\npath = {:?}\nfuel = 5000000\n[[bindings]]\nsource = \"fuel\"\nplugin = \"metered\"\nmax_attempts = 2\nbackoff = {{ initial = \"1ms\" }}\n",
        crate::support::plugin("spin").display().to_string()
    ));
    let server = Server::start(dir.path(), &config);
    for (plugin, ..) in cases {
        server.publish(plugin, &format!("to {plugin}"), &[]);
    }
    server.publish("fuel", "to fuel", &[]);
    let all = cases
        .iter()
        .map(|(p, _, class, attempts)| (format!("{p}.{p}"), *class, *attempts))
        .chain([("fuel.metered".to_owned(), "out-of-fuel", "2")]);
    for (binding, class, attempts) in all {
        let stats = server.wait_binding(&binding, "dead_lettered", 1);
        assert_eq!(
            stats["bindings"][&binding]["failures"][class],
            attempts.parse::<u64>().unwrap(),
            "{binding}: {stats}"
        );
        let (_, dlq) = server.get(&format!("/v1/destinations/{binding}.dlq/messages"));
        let d = &dlq["messages"][0];
        assert_eq!(header(d, "weir-dlq-class"), Some(class), "{binding}: {d}");
        assert_eq!(header(d, "weir-dlq-attempts"), Some(attempts), "{binding}");
        assert_eq!(header(d, "weir-dlq-binding"), Some(binding.as_str()));
        assert!(!header(d, "weir-dlq-reason").unwrap().is_empty());
        let history: Vec<String> =
            serde_json::from_str(header(d, "weir-dlq-history").unwrap()).unwrap();
        assert_eq!(
            history.len().to_string(),
            attempts,
            "{binding}: {history:?}"
        );
        assert!(
            history[0].starts_with(&format!("attempt 1: {class}: ")),
            "{history:?}"
        );
    }
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb << 10
}

#[test]
fn a_stuck_binding_keeps_a_bounded_window_however_deep_its_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.jobs]\n{}[[bindings]]\nsource = \"jobs\"\nplugin = \"fail\"\nordering = \"none\"\nmax_attempts = 1000\nmax_in_flight = 16\nbackoff = {{ initial = \"1h\", max = \"1h\" }}\n",
        plugin_toml("fail", "")
    );
    let server = Server::start(dir.path(), &config);
    let chunk = "x".repeat(64 << 10);
    let before = rss(server.pid());
    // 2,000 messages of 64 KiB: 125 MiB of backlog the binding cannot drain.
    for _ in 0..2000 {
        server.publish("jobs", &chunk, &[("weir-header-retryable", "true")]);
    }
    let stats = server.wait_binding("jobs.fail", "retried", 16);
    assert_eq!(stats["bindings"]["jobs.fail"]["in_flight"], 16, "{stats}");
    assert_eq!(
        stats["bindings"]["jobs.fail"]["invocations"], 16,
        "only the window was read and run"
    );
    let grown = rss(server.pid()).saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "memory grew by {} MiB behind a 16-message window",
        grown >> 20
    );
}
