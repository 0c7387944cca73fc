//! `broker.kind = "nats"` through real processes: a 3-node JetStream cluster (`nats_support`)
//! and two `weir run` hosts with one config, publishing over HTTP to either host.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::nats_support::Cluster;
use crate::support::{Server, plugin_toml, wait_for};

const BINDING: &str = "in.counter";

/// The `[server]` and `[broker]` tables of a host on `cluster`, with 2 s leases.
fn broker_toml(cluster: &Cluster, partitions: u32) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[broker]\nkind = \"nats\"\n\n[broker.nats]\n{}\npartitions = {partitions}\nlease = \"2s\"\n",
        cluster.servers_toml()
    )
}

fn config(cluster: &Cluster, plugin: &str, guarantee: &str) -> String {
    format!(
        r#"{}
[queues.in]
[topics.out]

{}
[[bindings]]
name = "{BINDING}"
source = "in"
plugin = "{plugin}"
guarantee = "{guarantee}"
ordering = "key"
"#,
        broker_toml(cluster, 4),
        plugin_toml(plugin, "publish = [\"out\"]"),
    )
}

/// Two hosts on one config, each in its own directory (its own plugin cache).
fn hosts(config: &str) -> (Vec<tempfile::TempDir>, Vec<Server>) {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = dirs
        .iter()
        .map(|d| Server::start(d.path(), config))
        .collect();
    (dirs, servers)
}

/// What the hosts say, for a failure message.
fn diag(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| {
            let err = s.stderr();
            let tail: Vec<&str> = err
                .lines()
                .filter(|l| !l.contains("not applied"))
                .rev()
                .take(60)
                .collect();
            format!(
                "host {}: acked {}\n{}",
                s.url,
                acked(s),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn acked(s: &Server) -> u64 {
    s.stats()["bindings"][BINDING]["acked"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until both hosts hold partitions (each has taken some over), so that work spreads.
fn wait_spread(servers: &[Server]) {
    wait_for(
        "both hosts to hold partitions",
        Duration::from_secs(60),
        || {
            servers
                .iter()
                .all(|s| s.stderr().contains("took a partition over"))
                .then_some(())
        },
    );
}

/// Reads a destination through `s` until it holds `n` records (or fails after the deadline
/// with what the hosts said).
fn collect(servers: &[Server], dest: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    let mut from = 0;
    while out.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{dest} holds {} of {n} records:\n{}",
            out.len(),
            diag(servers)
        );
        let (status, body) = servers[0].get(&format!(
            "/v1/destinations/{dest}/messages?from={from}&limit=1000&wait_ms=200"
        ));
        assert_eq!(status, 200, "{body}");
        let msgs = body["messages"].as_array().cloned().unwrap_or_default();
        from = body["next"].as_u64().unwrap();
        out.extend(msgs);
    }
    out
}

/// The input numbers in outputs, per key in output order.
fn by_key(outputs: &[Value]) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for o in outputs {
        let i: u64 = o["payload"].as_str().unwrap().parse().unwrap();
        by_key
            .entry(o["key"].as_str().unwrap().to_owned())
            .or_default()
            .push(i);
    }
    by_key
}

fn publish(servers: &[Server], n: u64, keys: u64) {
    for i in 0..n {
        let key = format!("k{}", i % keys);
        servers[(i % 2) as usize].publish(
            "in",
            &i.to_string(),
            &[("weir-key", &key), ("weir-header-forward-to", "out")],
        );
    }
}

#[test]
fn at_least_once_over_two_hosts_handles_everything_and_spreads_the_work() {
    let cluster = Cluster::start();
    let (_dirs, servers) = hosts(&config(&cluster, "counter", "at-least-once"));
    wait_spread(&servers);
    let n = 400u64;
    publish(&servers, n, 16);
    let outputs = collect(&servers, "out", n as usize);
    let mut seen: Vec<u64> = by_key(&outputs).into_values().flatten().collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "every input handled");
    let per_host: Vec<u64> = servers.iter().map(acked).collect();
    assert!(
        per_host.iter().all(|a| *a > 0),
        "work spread over both hosts: {per_host:?}"
    );
}

#[test]
fn exactly_once_over_two_hosts_stores_each_output_and_count_once() {
    let cluster = Cluster::start();
    let (_dirs, servers) = hosts(&config(&cluster, "counter", "exactly-once"));
    wait_spread(&servers);
    let (n, keys) = (300u64, 12u64);
    publish(&servers, n, keys);
    let outputs = collect(&servers, "out", n as usize);
    let by_key = by_key(&outputs);
    let mut seen: Vec<u64> = by_key.values().flatten().copied().collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..n).collect::<Vec<_>>(),
        "each input exactly once in the outputs"
    );
    for (key, is) in &by_key {
        assert!(
            is.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order: {is:?}"
        );
    }
    let per_host: Vec<u64> = servers.iter().map(acked).collect();
    assert!(
        per_host.iter().all(|a| *a > 0),
        "work spread over both hosts: {per_host:?}"
    );
    // No output beyond the n: a second look after the hosts went quiet.
    let (_, body) = servers[1].get("/v1/stats");
    assert_eq!(
        body["destinations"]["out"]["messages"].as_u64(),
        Some(n),
        "{body}"
    );
    // Key-value state, as both hosts see it: one count per input of the key. (The counter's
    // global `count` is written from every partition: not kept on JetStream, see
    // ARCHITECTURE.md.)
    wait_counts(&servers, n, keys);
}

/// Publishes input `i` (id `in-<i>`, so a retry after an unclear answer stores nothing twice)
/// to the first host of `urls` that takes it, retrying until one does.
fn publish_retrying(urls: &[String], i: u64, keys: u64) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        for url in urls {
            let sent = agent
                .post(&format!("{url}/v1/destinations/in/messages"))
                .header("weir-key", &format!("k{}", i % keys))
                .header("weir-id", &format!("in-{i}"))
                .header("weir-header-forward-to", "out")
                .send(i.to_string().as_bytes());
            // 201 stored; 200 stored before (a retry after an unclear answer).
            if sent.is_ok_and(|r| matches!(r.status().as_u16(), 200 | 201)) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no host took input {i} for 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Under load: SIGKILL one weir host (its partitions go to the other once its leases expire),
/// then SIGKILL one NATS node, then bring both back. Exactly-once must still store every output
/// once, keep each key's outputs in order across the take-overs, and end with every count
/// right on both hosts.
#[test]
fn exactly_once_survives_a_killed_host_and_a_killed_nats_node() {
    let mut cluster = Cluster::start();
    let config = config(&cluster, "counter", "exactly-once");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers: Vec<Option<Server>> = dirs
        .iter()
        .map(|d| Some(Server::start(d.path(), &config)))
        .collect();
    let took = |s: &Server| s.stderr().matches("took a partition over").count();
    wait_for(
        "both hosts to hold partitions",
        Duration::from_secs(60),
        || servers.iter().flatten().all(|s| took(s) > 0).then_some(()),
    );
    let (n, keys) = (600u64, 12u64);
    let urls = |servers: &[Option<Server>]| -> Vec<String> {
        servers.iter().flatten().map(|s| s.url.clone()).collect()
    };
    let mut i = 0;
    let mut step = |servers: &mut Vec<Option<Server>>, to: u64| {
        let u = urls(servers);
        while i < to {
            // Alternate between the live hosts.
            let mut order = u.clone();
            let len = order.len();
            order.rotate_left((i as usize) % len);
            publish_retrying(&order, i, keys);
            i += 1;
        }
    };
    step(&mut servers, n / 4);
    // A weir host dies mid-load.
    let killed = servers[0].take().unwrap();
    assert_eq!(killed.signal("KILL"), None, "killed by the signal");
    let before = took(servers[1].as_ref().unwrap());
    step(&mut servers, n / 2);
    // Its partitions go to the survivor once its leases expire, while the load goes on.
    wait_for(
        "the survivor to take the dead host's partitions",
        Duration::from_secs(60),
        || (took(servers[1].as_ref().unwrap()) > before).then_some(()),
    );
    // A NATS node dies mid-load.
    cluster.kill_node(0);
    step(&mut servers, 3 * n / 4);
    // Both come back; the restarted host gets its share again.
    cluster.start_node(0);
    cluster.wait_ready();
    servers[0] = Some(Server::start(dirs[0].path(), &config));
    step(&mut servers, n);
    let live: Vec<Server> = servers.into_iter().flatten().collect();

    let outputs = collect(&live, "out", n as usize);
    let by_key = by_key(&outputs);
    let mut seen: Vec<u64> = by_key.values().flatten().copied().collect();
    seen.sort_unstable();
    let doubled = seen.windows(2).filter(|w| w[0] == w[1]).count();
    seen.dedup();
    assert_eq!(doubled, 0, "no output stored twice");
    assert_eq!(
        seen,
        (0..n).collect::<Vec<_>>(),
        "every input in the outputs"
    );
    for (key, is) in &by_key {
        assert!(
            is.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order across the take-overs: {is:?}"
        );
    }
    let (_, body) = live[1].get("/v1/stats");
    assert_eq!(
        body["destinations"]["in"]["messages"].as_u64(),
        Some(n),
        "inputs stored once: {body}"
    );
    wait_counts(&live, n, keys);
}

/// Waits until every host sees `n / keys` counted for each key, or fails showing the counts.
fn wait_counts(servers: &[Server], n: u64, keys: u64) {
    let want: BTreeMap<String, u64> = (0..keys)
        .map(|k| (format!("count/k{k}"), n / keys))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for s in servers {
        loop {
            let (_, body) = s.get("/v1/plugins/counter/kv?prefix=count/&limit=1000");
            let got = counts(&body);
            if got == want {
                break;
            }
            if std::time::Instant::now() >= deadline {
                let all: Vec<String> = servers
                    .iter()
                    .map(|s| {
                        let (_, body) = s.get("/v1/plugins/counter/kv?prefix=count/&limit=1000");
                        format!("{}: {:?}", s.url, counts(&body))
                    })
                    .collect();
                panic!(
                    "counts expected {want:?}, found\n{}\n{}",
                    all.join("\n"),
                    diag(servers)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `count/<key>` entries of a `GET /v1/plugins/counter/kv` answer.
fn counts(body: &Value) -> BTreeMap<String, u64> {
    body["entries"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let hex = e["value_hex"].as_str().unwrap_or("");
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|j| u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).unwrap_or(0))
                .collect();
            let v = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
            (e["key"].as_str().unwrap_or("").to_owned(), v)
        })
        .collect()
}

/// A host paused past its leases (SIGSTOP) loses its partitions to the other, which fences it
/// by rewriting their commit records; once it runs again (SIGCONT) its writes are refused, it
/// stops those partitions and later gets its share back. Nothing is doubled or lost, each key's
/// outputs stay in order and every count is right on both hosts.
#[test]
fn exactly_once_fences_a_host_paused_past_its_leases() {
    let cluster = Cluster::start();
    let config = config(&cluster, "counter", "exactly-once");
    let (_dirs, servers) = hosts(&config);
    wait_spread(&servers);
    let took = |s: &Server| s.stderr().matches("took a partition over").count();
    let (n, keys) = (450u64, 9u64);
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    for i in 0..n / 3 {
        let mut order = urls.clone();
        order.rotate_left((i % 2) as usize);
        publish_retrying(&order, i, keys);
    }
    let paused = servers[0].pid().to_string();
    signal(&paused, "STOP");
    let before = took(&servers[1]);
    // While it is paused, the other host takes its partitions and the load goes on there.
    for i in n / 3..2 * n / 3 {
        publish_retrying(&urls[1..], i, keys);
    }
    wait_for(
        "the running host to take the paused host's partitions",
        Duration::from_secs(60),
        || (took(&servers[1]) > before).then_some(()),
    );
    signal(&paused, "CONT");
    for i in 2 * n / 3..n {
        let mut order = urls.clone();
        order.rotate_left((i % 2) as usize);
        publish_retrying(&order, i, keys);
    }
    let outputs = collect(&servers, "out", n as usize);
    let by_key = by_key(&outputs);
    let mut seen: Vec<u64> = by_key.values().flatten().copied().collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..n).collect::<Vec<_>>(),
        "each input exactly once in the outputs:\n{}",
        diag(&servers)
    );
    for (key, is) in &by_key {
        assert!(
            is.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order across the take-over: {is:?}"
        );
    }
    wait_counts(&servers, n, keys);
}

fn signal(pid: &str, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}").as_str(), pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Request/reply, dead letters with their redrive, and replay on JetStream, through one host:
/// the same routes and answers as on the embedded store.
#[test]
fn request_reply_dead_letters_redrive_and_replay_work_on_nats() {
    let cluster = Cluster::start();
    let config = format!(
        r#"{}
[queues.counts]
[queues.jobs]

{}{}
[[bindings]]
name = "tally"
source = "counts"
plugin = "counter"
ordering = "key"

[[bindings]]
name = "work"
source = "jobs"
plugin = "fail"
max_attempts = 1
"#,
        broker_toml(&cluster, 2),
        plugin_toml("counter", ""),
        plugin_toml("fail", ""),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config);
    wait_for(
        "the host to hold partitions",
        Duration::from_secs(60),
        || (server.stderr().matches("took a partition over").count() >= 4).then_some(()),
    );

    // A request gets its handler's reply (the counter answers with its total for the key).
    for want in ["1", "2"] {
        let (status, body) = server.post(
            "/v1/destinations/counts/requests",
            b"x",
            &[("weir-header-reply", "yes"), ("weir-key", "k")],
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["reply"]["payload"], want, "{body}");
        assert_eq!(body["reply"]["destination"], "weir.replies", "{body}");
    }

    // Dead letters: listed, shown, and a redriven one is delivered (and dead-lettered) again.
    for p in ["a", "b", "c"] {
        server.publish("jobs", p, &[("weir-key", p), ("weir-header-trace", p)]);
    }
    server.wait_binding("work", "dead_lettered", 3);
    let (status, list) = server.get("/v1/bindings/work/dlq");
    assert_eq!(status, 200, "{list}");
    let mut payloads: Vec<String> = list["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["payload"].as_str().unwrap().to_owned())
        .collect();
    payloads.sort();
    assert_eq!(payloads, ["a", "b", "c"], "{list}\n{}", server.stderr());
    let (status, done) = server.post("/v1/bindings/work/dlq/redrive?limit=1", b"", &[]);
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["redriven"], 1, "{done}");
    server.wait_binding("work", "dead_lettered", 4);
    let (_, stats) = server.get("/v1/stats");
    assert_eq!(
        stats["destinations"]["jobs"]["messages"].as_u64(),
        Some(4),
        "{stats}"
    );

    // Replay: the counter's two requests handled again by `tally` only.
    let before = server.stats()["bindings"]["tally"]["acked"]
        .as_u64()
        .unwrap();
    let (status, replayed) = server.post("/v1/bindings/tally/replay?from=0&to=2", b"", &[]);
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["replayed"], 2, "{replayed}");
    server.wait_binding("tally", "acked", before + 2);
    let (_, kv) = server.get("/v1/plugins/counter/kv?prefix=count/&limit=10");
    assert_eq!(counts(&kv).get("count/k"), Some(&4), "{kv}");

    // Per-key reads: the key's records (the two requests and their replayed copies), not the
    // other key's, from an offset on.
    server.publish("counts", "other", &[("weir-key", "other")]);
    let (status, body) = server.get("/v1/destinations/counts/messages?key=k&from=0&limit=10");
    assert_eq!(status, 200, "{body}");
    let offsets: Vec<u64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 1, 2, 3], "{body}");
    let (_, body) = server.get("/v1/destinations/counts/messages?key=k&from=2&limit=1");
    assert_eq!(body["messages"][0]["offset"], 2, "{body}");
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(1), "{body}");
    let (_, body) = server.get("/v1/destinations/counts/messages?key=other&from=0&limit=10");
    assert_eq!(body["messages"][0]["payload"], "other", "{body}");
}
