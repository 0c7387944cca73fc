//! The real `weir run` binary end to end: messages published over HTTP are handled by plugins
//! built from source, outcomes applied, failures dead-lettered, bad plugins refused at start.

use crate::support::{Server, plugin, plugin_toml};

fn pipeline_config() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[queues.orders]
[topics."orders.enriched"]
[queues.jobs]

{enrich}
{counter}
{tally}
{trap}

[[bindings]]
source = "orders"
plugin = "enrich"

[[bindings]]
source = "orders.enriched"
plugin = "counter"

[[bindings]]
source = "orders.enriched"
plugin = "c-tally"

[[bindings]]
source = "jobs"
plugin = "trap"
max_attempts = 2
backoff = {{ initial = "1ms", jitter = 0.0 }}
"#,
        enrich = plugin_toml("enrich", "publish = [\"orders.enriched\"]"),
        counter = plugin_toml("counter", ""),
        tally = plugin_toml("c-tally", ""),
        trap = plugin_toml("trap", ""),
    )
}

#[test]
fn published_messages_are_handled_and_outcomes_applied() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &pipeline_config());
    for (i, key) in ["alice", "bob", "alice"].iter().enumerate() {
        let body = server.publish("orders", &format!("order {i}"), &[("weir-key", key)]);
        assert_eq!(body["offset"], i as u64);
    }
    // The topic fans out to both subscriptions, each with its own cursor.
    server.wait_binding("orders.enriched.counter", "acked", 3);
    let stats = server.wait_binding("orders.enriched.c-tally", "acked", 3);
    assert_eq!(stats["bindings"]["orders.enrich"]["acked"], 3);
    assert_eq!(stats["bindings"]["orders.enrich"]["lag"], 0);
    assert_eq!(stats["destinations"]["orders.enriched"]["messages"], 3);

    let (_, enriched) = server.get("/v1/destinations/orders.enriched/messages");
    let payloads: Vec<&str> = enriched["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["ORDER 0", "ORDER 1", "ORDER 2"]);
    assert_eq!(enriched["messages"][1]["key"], "bob");

    let (_, kv) = server.get("/v1/plugins/counter/kv?prefix=count");
    let entries: Vec<(String, String)> = kv["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_owned(),
                e["value_hex"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let le = |n: u64| {
        n.to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        entries,
        [
            ("count".to_owned(), le(3)),
            ("count/alice".to_owned(), le(2)),
            ("count/bob".to_owned(), le(1))
        ]
    );
    let (_, tally) = server.get("/v1/plugins/c-tally/kv");
    assert_eq!(tally["entries"][0]["value_hex"], le(3));
}

#[test]
fn a_trapping_plugin_is_dead_lettered_while_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &pipeline_config());
    server.publish("jobs", "doomed", &[]);
    server.publish("orders", "fine", &[]);
    let stats = server.wait_binding("jobs.trap", "dead_lettered", 1);
    assert_eq!(stats["bindings"]["jobs.trap"]["failures"]["trap"], 2);
    assert_eq!(stats["bindings"]["jobs.trap"]["retried"], 1);
    server.wait_binding("orders.enriched.counter", "acked", 1);

    let (_, dlq) = server.get("/v1/destinations/jobs.trap.dlq/messages");
    let m = &dlq["messages"][0];
    assert_eq!(m["payload"], "doomed");
    let header = |name: &str| {
        m["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_owned())
    };
    assert_eq!(header("weir-dlq-class").as_deref(), Some("trap"));
    assert_eq!(header("weir-dlq-attempts").as_deref(), Some("2"));
    assert_eq!(header("weir-dlq-source").as_deref(), Some("jobs"));
    let reason = header("weir-dlq-reason").unwrap();
    assert!(
        reason.starts_with("wasm trap: wasm `unreachable` instruction executed"),
        "{reason}"
    );
}

#[test]
fn a_second_start_loads_plugins_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}",
        plugin_toml("counter", "")
    );
    let first = Server::start(dir.path(), &config);
    assert_eq!(
        first.stats()["plugins"]["counter"]["loaded_from"],
        "compiled"
    );
    assert_eq!(first.stop(), Some(0), "SIGTERM stops the server cleanly");
    let second = Server::start_existing(dir.path());
    assert_eq!(second.stats()["plugins"]["counter"]["loaded_from"], "cache");
}

#[test]
fn bad_plugins_stop_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let noop = std::fs::read(plugin("noop")).unwrap();
    std::fs::write(dir.path().join("truncated.wasm"), &noop[..noop.len() / 3]).unwrap();
    let cases = [
        (
            plugin_toml("sneaky", ""),
            "plugin `sneaky` imports `wasi:cli/environment@0.2.0`, which weir does not grant",
        ),
        (
            "[plugins.cut]\npath = \"truncated.wasm\"\n".to_owned(),
            "is not a valid WebAssembly component",
        ),
    ];
    for (config, expect) in cases {
        std::fs::write(
            dir.path().join("weir.toml"),
            format!("[server]\nlisten = \"127.0.0.1:0\"\n{config}"),
        )
        .unwrap();
        let (code, stdout, stderr) =
            crate::support::weir(&["run", "--config", "weir.toml"], dir.path());
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(expect), "{stderr}");
        assert!(
            !stdout.contains("listening"),
            "never started serving: {stdout}"
        );
    }
}

#[test]
fn the_data_directory_is_private_and_one_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.q]\n{}",
        plugin_toml("noop", "")
    );
    let server = Server::start(dir.path(), &config);
    let data = dir.path().join(".weir");
    let cache = data.join("cache");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&data), mode(&cache)), (0o700, 0o700));
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "noop was cached"
    );
    drop(server);
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    for (path, mode, says) in [
        (&data, 0o777, "cannot use server.data_dir"),
        (&cache, 0o770, "cannot use the precompiled-component cache"),
    ] {
        chmod(path, mode);
        let (code, stdout, stderr) =
            crate::support::weir(&["run", "--config", "weir.toml"], dir.path());
        assert_eq!(code, 1, "{stderr}");
        assert!(!stdout.contains("listening"), "{stdout}");
        for part in [says, "writable by its group or others", "chmod go-w"] {
            assert!(stderr.contains(part), "{part} in: {stderr}");
        }
        chmod(path, 0o700);
    }
    drop(Server::start_existing(dir.path()));
}

#[test]
fn a_message_that_keeps_killing_the_host_is_dead_lettered_after_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.jobs]\n{}\n[[bindings]]\nsource = \"jobs\"\nplugin = \"spin\"\nmax_attempts = 2\n",
        plugin_toml("spin", "timeout_ms = 600000")
    );
    let server = Server::start(dir.path(), &config);
    server.publish("jobs", "hangs forever", &[]);
    server.wait_binding("jobs.spin", "invocations", 1);
    drop(server); // SIGKILL mid-invocation: the delivery was recorded, its outcome never was
    let server = Server::start_existing(dir.path());
    server.wait_binding("jobs.spin", "invocations", 1);
    drop(server);
    // Third start: two deliveries without an outcome used up max_attempts = 2.
    let server = Server::start_existing(dir.path());
    let stats = server.wait_binding("jobs.spin", "dead_lettered", 1);
    assert_eq!(
        stats["bindings"]["jobs.spin"]["invocations"], 0,
        "not invoked a third time"
    );
    let (_, dlq) = server.get("/v1/destinations/jobs.spin.dlq/messages");
    let headers = &dlq["messages"][0]["headers"];
    let header = |name: &str| {
        headers
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].clone())
    };
    assert_eq!(header("weir-dlq-class"), Some("interrupted".into()));
    assert_eq!(header("weir-dlq-attempts"), Some("2".into()));
}

#[test]
fn messages_cursors_and_state_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.orders]\n{}\n[[bindings]]\nsource = \"orders\"\nplugin = \"counter\"\n",
        plugin_toml("counter", "")
    );
    let server = Server::start(dir.path(), &config);
    for i in 0..3 {
        server.publish("orders", &format!("o{i}"), &[("weir-key", "k")]);
    }
    server.wait_binding("orders.counter", "acked", 3);
    drop(server); // SIGKILL
    let server = Server::start_existing(dir.path());
    let stats = server.stats();
    assert_eq!(stats["destinations"]["orders"]["messages"], 3);
    assert_eq!(
        stats["bindings"]["orders.counter"]["cursor"], 3,
        "acknowledged messages are not redelivered"
    );
    server.publish("orders", "o3", &[("weir-key", "k")]);
    server.wait_binding("orders.counter", "acked", 1);
    let (_, kv) = server.get("/v1/plugins/counter/kv?prefix=count");
    assert_eq!(
        kv["entries"][0]["value_hex"], "0400000000000000",
        "the counter kept counting from 3: {kv}"
    );
}

/// Bytes of the files in a directory.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok()) // a file may go between listing and stat
        .map(|m| m.len())
        .sum()
}

#[test]
fn retention_by_size_really_frees_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n[broker]\nsegment_size = \"1MiB\"\nretention_interval = \"20ms\"\n[queues.logs]\nretention_max_bytes = \"2MiB\"\n";
    let server = Server::start(dir.path(), config);
    let chunk = "x".repeat(64 << 10);
    for _ in 0..80 {
        server.publish("logs", &chunk, &[]); // 5 MiB in all
    }
    // The retention task may be part-way through its passes when the last publish returns; wait
    // for the settled state (at most the limit plus the active segment, on disk as well).
    let log_dir = dir.path().join(".weir/store/logs/logs");
    let stats = crate::support::wait_for(
        "retention to bring the log within its limit",
        std::time::Duration::from_secs(30),
        || {
            // Reads start at the first kept record: the read and the stats around it agree
            // once retention has stopped removing segments.
            let before = server.stats();
            let (_, read) = server.get("/v1/destinations/logs/messages?from=0&limit=1");
            let s = server.stats();
            let logs = &s["destinations"]["logs"];
            let first = logs["first_offset"].as_u64().unwrap();
            let settled = first > 0
                && before["destinations"]["logs"]["first_offset"] == first
                && read["messages"][0]["offset"] == first
                && logs["bytes"].as_u64().unwrap() <= 3 << 20
                && dir_bytes(&log_dir) <= 3 << 20;
            settled.then_some(s)
        },
    );
    let logs = &stats["destinations"]["logs"];
    assert_eq!(logs["messages"], 80, "offsets keep counting");
}

#[test]
fn mid_log_corruption_stops_start_up_unless_repair_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n[queues.orders]\n";
    let server = Server::start(dir.path(), config);
    for i in 0..10 {
        server.publish(
            "orders",
            &format!("order number {i} {}", "-".repeat(100)),
            &[],
        );
    }
    drop(server);
    let segment = dir
        .path()
        .join(".weir/store/logs/orders/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let (code, _, err) = crate::support::weir(&["run", "--config", "weir.toml"], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("corrupt log: ") && err.contains("00000000000000000000.log at byte "),
        "names file and offset: {err}"
    );
    assert!(err.contains("weir run --repair"), "says what to do: {err}");

    let repaired = Server::start_with(dir.path(), &["--repair"]);
    let stats = repaired.stats();
    let kept = stats["destinations"]["orders"]["messages"]
        .as_u64()
        .unwrap();
    assert!(
        (1..10).contains(&kept),
        "keeps what came before the damage: {kept}"
    );
    assert!(
        repaired.stderr().contains("repair dropped"),
        "reports what was dropped: {}",
        repaired.stderr()
    );
    let (_, read) = repaired.get("/v1/destinations/orders/messages");
    assert_eq!(
        read["messages"][0]["payload"],
        format!("order number 0 {}", "-".repeat(100))
    );
}

#[test]
fn a_publish_with_a_stored_id_returns_the_original_offset_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.orders]\n",
    );
    server.publish("orders", "first", &[]);
    let first = server.publish("orders", "order 42", &[("weir-id", "order-42")]);
    assert_eq!(
        (first["offset"].as_u64(), first["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    let (status, again) = server.post(
        "/v1/destinations/orders/messages",
        b"order 42 again",
        &[("weir-id", "order-42")],
    );
    assert_eq!(status, 200, "a duplicate is not created: {again}");
    assert_eq!(
        (again["offset"].as_u64(), again["duplicate"].as_bool()),
        (Some(1), Some(true))
    );
    drop(server);

    // The dedup index lives as long as the data: it survives a restart.
    let server = Server::start_existing(dir.path());
    let (status, after) = server.post(
        "/v1/destinations/orders/messages",
        b"x",
        &[("weir-id", "order-42")],
    );
    assert_eq!((status, after["offset"].as_u64()), (200, Some(1)));
    let (code, out, err) = crate::support::weir(
        &[
            "publish",
            "orders",
            "y",
            "--id",
            "order-42",
            "--server",
            &server.url,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("already published to orders at offset 1"),
        "{out}"
    );
    assert_eq!(
        server.stats()["destinations"]["orders"]["messages"],
        2,
        "nothing new was stored"
    );
    let (_, read) = server.get("/v1/destinations/orders/messages?from=1");
    assert_eq!(
        read["messages"][0]["payload"], "order 42",
        "the original is kept"
    );
}

#[test]
fn reads_by_key_and_compaction_keep_the_latest_record_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n[broker]\nsegment_size = \"1MiB\"\nretention_interval = \"20ms\"\n[topics.accounts]\ncompact = true\n";
    let server = Server::start(dir.path(), config);
    let pad = "-".repeat(60 << 10);
    // 40 updates of 4 accounts, about 2.4 MiB: compaction has sealed segments to work on.
    for i in 0..40 {
        let account = format!("acct-{}", i % 4);
        server.publish(
            "accounts",
            &format!("{account} v{i} {pad}"),
            &[("weir-key", &account)],
        );
    }
    let (_, one) = server.get("/v1/destinations/accounts/messages?key=acct-1&limit=100");
    let offsets: Vec<u64> = one["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    let before = offsets.len();
    assert!(
        before >= 1 && offsets.windows(2).all(|w| w[0] < w[1]),
        "{offsets:?}"
    );
    assert!(
        one["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["key"] == "acct-1")
    );

    // Compaction runs in the background, possibly already while the updates were published, so
    // compare with what the 40 uncompacted records would take, not with a snapshot.
    let uncompacted = 40 * (60 << 10);
    let bytes = |s: &serde_json::Value| s["destinations"]["accounts"]["bytes"].as_u64().unwrap();
    crate::support::wait_for(
        "compaction to free space",
        std::time::Duration::from_secs(30),
        || (bytes(&server.stats()) < uncompacted).then_some(()),
    );
    let (_, all) = server.get("/v1/destinations/accounts/messages?limit=1000");
    let messages = all["messages"].as_array().unwrap();
    assert!(
        messages.len() < 40,
        "older versions were removed: {} left",
        messages.len()
    );
    for account in 0..4 {
        let key = format!("acct-{account}");
        let latest = messages
            .iter()
            .rev()
            .find(|m| m["key"] == key.as_str())
            .unwrap();
        let version = 36 + account;
        assert!(
            latest["payload"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{key} v{version} ")),
            "latest kept for {key}"
        );
    }
    let offsets: Vec<u64> = messages
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets keep their order, with gaps: {offsets:?}"
    );
}

#[test]
fn reads_from_a_timestamp_start_at_the_first_record_published_then() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.events]\n",
    );
    for i in 0..5 {
        server.publish("events", &format!("e{i}"), &[]);
    }
    let (_, all) = server.get("/v1/destinations/events/messages");
    let stamps: Vec<u64> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["timestamp_ms"].as_u64().unwrap())
        .collect();
    let t = stamps[2];
    let first_at_t = stamps.iter().position(|s| *s >= t).unwrap() as u64;
    let (status, from_t) = server.get(&format!(
        "/v1/destinations/events/messages?from_time_ms={t}"
    ));
    assert_eq!(status, 200, "{from_t}");
    assert_eq!(from_t["messages"][0]["offset"], first_at_t);
    assert_eq!(
        from_t["messages"].as_array().unwrap().len() as u64,
        5 - first_at_t
    );
    let (_, future) = server.get(&format!(
        "/v1/destinations/events/messages?from_time_ms={}",
        stamps[4] + 60_000
    ));
    assert!(future["messages"].as_array().unwrap().is_empty());
}
