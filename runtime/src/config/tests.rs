use std::path::Path;

use super::*;

/// Parses `text` as `dir/weir.toml`, where `dir` holds an empty `p.wasm`.
fn parse(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
    let file = dir.path().join("weir.toml");
    Config::parse(&file, text).map_err(|mut e| {
        e.file = Path::new("weir.toml").to_owned();
        e
    })
}

fn check_err(text: &str, expect: &str) {
    match parse(text) {
        Ok(c) => panic!("expected error {expect:?}, parsed {c:?}"),
        Err(e) => assert_eq!(e.to_string(), expect),
    }
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"

[queues.orders]
[topics."orders.enriched"]

[plugins.enrich]
path = "p.wasm"
memory = "32MiB"
timeout_ms = 250
fuel = 1000000
publish = ["orders.enriched"]

[[bindings]]
source = "orders"
plugin = "enrich"
"#;

#[test]
fn good_config() {
    let c = parse(GOOD).unwrap();
    let p = &c.plugins[&PluginName::new("enrich").unwrap()];
    assert_eq!(p.limits.memory_bytes, 32 << 20);
    assert_eq!(p.limits.timeout, Duration::from_millis(250));
    assert_eq!(p.limits.fuel, Some(1_000_000));
    assert!(p.path.is_absolute());
    let b = &c.bindings[0];
    assert_eq!(b.name.as_str(), "orders.enrich");
    assert_eq!(b.dead_letter.as_str(), "orders.enrich.dlq");
    assert_eq!(b.max_attempts, 5);
    assert_eq!(
        c.destinations.get(&b.dead_letter),
        Some(&DestinationKind::Queue),
        "the default dead-letter queue is created"
    );
}

#[test]
fn defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7070");
    assert!(c.server.data_dir.ends_with(".weir"));
    assert_eq!(c.server.max_message_size, 1 << 20);
    assert_eq!(c.server.fsync, FsyncPolicy::Always);
    let c = parse("[broker]\nfsync = \"interval\"\nfsync_interval_ms = 5\n").unwrap();
    assert_eq!(
        c.server.fsync,
        FsyncPolicy::Interval(Duration::from_millis(5))
    );
}

#[test]
fn the_reply_inbox_name_is_reserved() {
    let reserved = "`weir.replies` is reserved for weir's reply inbox; choose another name";
    check_err(
        "[queues.\"weir.replies\"]\n",
        &format!("weir.toml:1:9: {reserved}"),
    );
    check_err(
        "[topics.\"weir.replies\"]\n",
        &format!("weir.toml:1:9: {reserved}"),
    );
    check_err(
        "[plugins.x]\npath = \"p.wasm\"\npublish = [\"weir.replies\"]\n",
        &format!("weir.toml:3:12: {reserved}"),
    );
    check_err(
        "[plugins.x]\npath = \"p.wasm\"\n[[bindings]]\nsource = \"weir.replies\"\nplugin = \"x\"\n",
        &format!("weir.toml:4:10: {reserved}"),
    );
    check_err(
        "[queues.q]\n[plugins.x]\npath = \"p.wasm\"\n[[bindings]]\nsource = \"q\"\nplugin = \"x\"\ndead_letter = \"weir.replies\"\n",
        &format!("weir.toml:7:15: {reserved}"),
    );
}

#[test]
fn reply_retention() {
    assert_eq!(
        parse("").unwrap().server.reply_retention,
        Duration::from_secs(600)
    );
    let c = parse("[broker]\nreply_retention = \"30s\"\n").unwrap();
    assert_eq!(c.server.reply_retention, Duration::from_secs(30));
}

#[test]
fn retention_settings() {
    let c = parse(
        "[queues.q]\nretention_max_age = \"7d\"\nretention_max_bytes = \"1GiB\"\n[topics.t]\n",
    )
    .unwrap();
    let q = DestinationName::new("q").unwrap();
    assert_eq!(
        c.retention.get(&q),
        Some(&Retention {
            max_age: Some(Duration::from_secs(7 * 86400)),
            max_bytes: Some(1 << 30),
            compact: false,
        })
    );
    assert!(
        !c.retention
            .contains_key(&DestinationName::new("t").unwrap()),
        "no limits, no entry"
    );
    check_err(
        "[broker]\nsegment_size = \"3GiB\"\n",
        "weir.toml:2:16: `broker.segment_size` must be between 1MiB and 2GiB, found 3GiB",
    );
    assert!(parse("[broker]\nsegment_size = \"2GiB\"\n").is_ok());
    check_err(
        "[queues.q]\nretention_max_bytes = \"2MiB\"\n",
        "weir.toml:2:23: `q`: `retention_max_bytes` (2MiB) is smaller than one segment (256MiB); retention removes whole segments, so raise it or lower `broker.segment_size`",
    );
    check_err(
        "[topics.t]\nretention_max_age = \"7 weeks\"\n",
        "weir.toml:2:21: `topics.t.retention_max_age`: unknown duration unit \"weeks\" in \"7 weeks\"; use ms, s, m, h or d",
    );
}

#[test]
fn max_depth_settings() {
    let c = parse("[queues.q]\nmax_depth = 5\n[topics.t]\nmax_depth = 1\n[queues.free]\n").unwrap();
    let d = |n: &str| DestinationName::new(n).unwrap();
    assert_eq!(c.max_depth.get(&d("q")), Some(&5));
    assert_eq!(c.max_depth.get(&d("t")), Some(&1));
    assert_eq!(c.max_depth.get(&d("free")), None, "no limit by default");
    check_err(
        "[queues.q]\nmax_depth = 0\n",
        "weir.toml:2:13: `q`: `max_depth` must be at least 1, found 0; omit it for no limit",
    );
    check_err(
        "[topics.t]\nmax_depth = -3\n",
        "weir.toml:2:13: `topics.t.max_depth`: invalid value: integer `-3`, expected u64",
    );
    check_err(
        "[topics.t]\nmax_depth = \"5\"\n",
        "weir.toml:2:13: `topics.t.max_depth`: invalid type: string \"5\", expected u64",
    );
}

#[test]
fn errors_name_file_line_and_key() {
    check_err(
        "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n",
        "weir.toml:3:1: unknown key `lisen` in [server]; did you mean `listen`? (valid keys: `listen`, `data_dir`, `max_message_size`, `api_token`, `shutdown_grace`, `reload_quiet`, `compiled_cache_memory`)",
    );
    check_err(
        "[queue.orders]\n",
        "weir.toml:1:2: unknown key `queue` at the top level; did you mean `queues`? (valid keys: `server`, `broker`, `queues`, `topics`, `streams`, `plugins`, `aggregates`, `bindings`)",
    );
    check_err(
        "[server]\nlisten = \"nowhere\"\n",
        "weir.toml:2:10: `server.listen` must be an address such as \"127.0.0.1:7070\", found \"nowhere\"",
    );
    check_err(
        "[queues.\"bad name\"]\n",
        "weir.toml:1:9: destination name `bad name` contains ' '; names use letters, digits, `.`, `_` and `-` and start with a letter or digit",
    );
    check_err(
        "[queues.a]\n[topics.a]\n",
        "weir.toml:2:9: `a` is declared both as a queue and as a topic; destination names are shared",
    );
    check_err(
        "[broker]\nkind = \"kafka\"\n",
        "weir.toml:2:8: `broker.kind`: unknown variant `kafka`, expected `embedded` or `nats`",
    );
    check_err(
        "[server]\nlisten = 7070\n",
        "weir.toml:2:10: `server.listen`: invalid type: integer `7070`, expected a string",
    );
}

#[test]
fn plugin_errors() {
    check_err(
        "[plugins.x]\npath = \"p.wasm\"\nmemory = \"1KiB\"\n",
        "weir.toml:3:10: plugin `x`: `memory` must be between 64KiB and 4GiB, found 1KiB",
    );
    check_err(
        "[plugins.x]\npath = \"p.wasm\"\nmemory = \"12 parsecs\"\n",
        "weir.toml:3:10: `plugins.x.memory`: unknown size unit \"parsecs\" in \"12 parsecs\"; use B, KiB, MiB or GiB",
    );
    check_err(
        "[plugins.x]\npath = \"p.wasm\"\ntimeout_ms = 0\n",
        "weir.toml:3:14: plugin `x`: `timeout_ms` must be between 1 and 600000, found 0",
    );
    check_err(
        "[plugins.x]\npath = \"p.wasm\"\nfuel = 0\n",
        "weir.toml:3:8: plugin `x`: `fuel` must be positive; omit it for unlimited fuel",
    );
    check_err(
        "[plugins.x]\npath = \"p.wasm\"\npublish = [\"nowhere\"]\n",
        "weir.toml:3:12: plugin `x` may publish to `nowhere`, but no queue or topic of that name is declared",
    );
    check_err(
        "[plugins.x]\npath = \"p.wasm\"\nthreads = 4\n",
        "weir.toml:3:1: unknown key `threads` in [plugins.x] (valid keys: `path`, `memory`, `timeout_ms`, `fuel`, `publish`, `instances`, `watch`, `rollback_after`, `rollback_failure_rate`)",
    );
    check_err(
        "[server]\nreload_quiet = \"1ms\"\n",
        "weir.toml:2:16: `server.reload_quiet` must be between 10ms and 60s, found 1 ms",
    );
    check_err(
        "[server]\ncompiled_cache_memory = \"65GiB\"\n",
        "weir.toml:2:25: `server.compiled_cache_memory` must be at most 64GiB, found 65GiB",
    );
    check_err(
        "[plugins.x]\npath = \"p.wasm\"\nrollback_failure_rate = 1.5\n",
        "weir.toml:3:25: plugin `x`: `rollback_failure_rate` must be at least 0 and below 1 (the fraction of a new version's first invocations that may fail), found 1.5",
    );
}

#[test]
fn missing_plugin_file_is_named() {
    let e = parse("[plugins.x]\npath = \"missing.wasm\"\n").unwrap_err();
    assert_eq!(e.position, Some((2, 8)));
    assert!(e.message.starts_with("plugin `x`: component file `"), "{e}");
    assert!(e.message.contains("missing.wasm` does not exist"), "{e}");
}

#[test]
fn binding_errors() {
    let base = "[queues.q]\n[plugins.p]\npath = \"p.wasm\"\n";
    check_err(
        &format!("{base}[[bindings]]\nsource = \"nope\"\nplugin = \"p\"\n"),
        "weir.toml:5:10: binding source `nope` is not a declared queue, topic or stream store (declared: `q`); declare it as [queues.nope], [topics.nope] or [streams.nope]",
    );
    check_err(
        &format!("{base}[[bindings]]\nsource = \"q\"\nplugin = \"nope\"\n"),
        "weir.toml:6:10: binding plugin `nope` is not declared (declared: `p`); declare it as [plugins.nope]",
    );
    check_err(
        &format!("{base}[[bindings]]\nsource = \"q\"\nplugin = \"p\"\nmax_attempts = 0\n"),
        "weir.toml:7:16: binding `q.p`: `max_attempts` must be between 1 and 1000, found 0",
    );
    check_err(
        &format!("{base}[[bindings]]\nsource = \"q\"\nplugin = \"p\"\ndead_letter = \"dlq\"\n"),
        "weir.toml:7:15: binding `q.p`: dead-letter queue `dlq` is not a declared queue; declare [queues.dlq] or omit `dead_letter` for the default `q.p.dlq`",
    );
    check_err(
        &format!(
            "{base}[[bindings]]\nsource = \"q\"\nplugin = \"p\"\n[[bindings]]\nsource = \"q\"\nplugin = \"p\"\n"
        ),
        "weir.toml:8:10: two bindings are named `q.p`; give one a distinct `name`",
    );
    check_err(
        &format!("{base}[[bindings]]\nsource = \"q\"\nplugin = \"p\"\nretries = 3\n"),
        "weir.toml:7:1: unknown key `retries` in [[bindings]] #1 (valid keys: `name`, `source`, `plugin`, `guarantee`, `ordering`, `concurrency`, `timeout`, `max_attempts`, `backoff`, `dead_letter`, `poison`, `max_in_flight`)",
    );
    let binding = format!("{base}[[bindings]]\nsource = \"q\"\nplugin = \"p\"\n");
    check_err(
        &format!("{binding}guarantee = \"once\"\n"),
        "weir.toml:7:13: binding `q.p`: unknown guarantee \"once\"; expected one of `at-most-once`, `at-least-once`, `exactly-once`",
    );
    check_err(
        &format!("{binding}ordering = \"fifo\"\nconcurrency = 4\n"),
        "weir.toml:8:15: binding `q.p`: `fifo` ordering handles one message at a time, so `concurrency` must be 1 (found 4); use `ordering = \"key\"` for parallel ordered handling",
    );
    check_err(
        &format!("{binding}concurrency = 0\n"),
        "weir.toml:7:15: binding `q.p`: `concurrency` must be between 1 and 256, found 0",
    );
    check_err(
        &format!("{binding}timeout = \"5s\"\n"),
        "weir.toml:7:11: binding `q.p`: `timeout` must be more than 0 and at most the plugin's `timeout_ms` (1000 ms), found 5000 ms",
    );
    check_err(
        &format!("{binding}backoff = {{ initial = \"2m\" }}\n"),
        "weir.toml:7:11: binding `q.p`: backoff `initial` (120000 ms) is longer than `max` (60000 ms)",
    );
    check_err(
        &format!("{binding}backoff = {{ jitter = 2.0 }}\n"),
        "weir.toml:7:11: binding `q.p`: backoff `jitter` must be between 0 and 1, found 2",
    );
    check_err(
        &format!("{binding}poison = \"drop\"\n"),
        "weir.toml:7:10: binding `q.p`: unknown poison policy \"drop\"; expected one of `dead-letter`, `park`",
    );
}

#[test]
fn binding_delivery_settings() {
    let base = "[queues.q]\n[plugins.p]\npath = \"p.wasm\"\n[[bindings]]\nsource = \"q\"\nplugin = \"p\"\n";
    let c = parse(base).unwrap();
    let b = &c.bindings[0];
    assert_eq!(
        (
            b.guarantee,
            b.ordering,
            b.concurrency,
            b.poison,
            b.max_in_flight
        ),
        (
            Guarantee::AtLeastOnce,
            Ordering::Key,
            4,
            Poison::DeadLetter,
            4096
        )
    );
    assert_eq!(b.timeout, Duration::from_secs(1), "the plugin's timeout");
    assert_eq!(b.backoff, Backoff::default());
    let c = parse(&format!(
        "{base}guarantee = \"exactly-once\"\nordering = \"fifo\"\ntimeout = \"250ms\"\npoison = \"park\"\nmax_in_flight = 16\nbackoff = {{ initial = \"10ms\", max = \"1s\", multiplier = 3.0, jitter = 0.0 }}\n"
    ))
    .unwrap();
    let b = &c.bindings[0];
    assert_eq!(
        (
            b.guarantee,
            b.ordering,
            b.concurrency,
            b.poison,
            b.max_in_flight
        ),
        (Guarantee::ExactlyOnce, Ordering::Fifo, 1, Poison::Park, 16)
    );
    assert_eq!(b.timeout, Duration::from_millis(250));
    assert_eq!(
        b.backoff,
        Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
            multiplier: 3.0,
            jitter: 0.0
        }
    );
}

#[test]
fn api_token_and_shutdown_grace() {
    let c = parse("").unwrap();
    assert_eq!(c.server.api_token, None);
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    let c = parse("[server]\napi_token = \"0123456789abcdef\"\nshutdown_grace = \"5s\"\n").unwrap();
    assert_eq!(c.server.api_token.as_deref(), Some("0123456789abcdef"));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
    check_err(
        "[server]\napi_token = \"short\"\n",
        "weir.toml:2:13: `server.api_token` must be 16 to 4096 visible ASCII characters (no spaces), found 5 bytes",
    );
    check_err(
        "[server]\nshutdown_grace = 30\n",
        "weir.toml:2:18: `server.shutdown_grace`: invalid type: integer `30`, expected a duration such as \"7d\", \"12h\" or \"30s\"",
    );
}

#[test]
fn mistakes_of_a_new_user_say_where_and_what_to_do() {
    let text = "[queues.orders]\n[plugins.p]\npath = \"p.wasm\"\n[[bindings]]\nsource = \"order\"\nplugin = \"p\"\n";
    check_err(
        text,
        "weir.toml:5:10: binding source `order` is not a declared queue, topic or stream store (did you mean `orders`? declared: `orders`); declare it as [queues.order], [topics.order] or [streams.order]",
    );
    check_err(
        "[queues.q]\n[plugins.p]\npath = \"p.wasm\"\n[[bindings]]\nsource = \"q\"\nplugin = \"p\"\nmax_attempts = \"3\"\n",
        "weir.toml:7:16: `max_attempts` in `[[bindings]] #1`: invalid type: string \"3\", expected u32",
    );
    check_err(
        "[server]\nmax_mesage_size = \"2MiB\"\n",
        "weir.toml:2:1: unknown key `max_mesage_size` in [server]; did you mean `max_message_size`? (valid keys: `listen`, `data_dir`, `max_message_size`, `api_token`, `shutdown_grace`, `reload_quiet`, `compiled_cache_memory`)",
    );
}

#[test]
fn stream_stores() {
    let c = parse(
        r#"
[streams.orders]
retention_max_age = "7d"
max_count = 100

[plugins.p]
path = "p.wasm"

[[bindings]]
source = "orders"
plugin = "p"
"#,
    )
    .unwrap();
    let orders = DestinationName::new("orders").unwrap();
    assert_eq!(c.destinations.get(&orders), Some(&DestinationKind::Stream));
    assert_eq!(c.streams[&orders].max_count, Some(100));
    assert_eq!(
        c.retention[&orders].max_age,
        Some(Duration::from_secs(7 * 86400))
    );
    assert_eq!(c.bindings[0].source, orders);
    // Consumed in commit order, one event at a time, unless the binding asks otherwise.
    assert_eq!(
        (c.bindings[0].ordering, c.bindings[0].concurrency),
        (Ordering::Fifo, 1)
    );
    let keyed = parse(
        "[streams.orders]\n[plugins.p]\npath = \"p.wasm\"\n[[bindings]]\nsource = \"orders\"\nplugin = \"p\"\nordering = \"key\"\n",
    )
    .unwrap();
    assert_eq!(keyed.bindings[0].ordering, Ordering::Key);
    assert!(keyed.bindings[0].concurrency > 1);
    check_err(
        "[queues.orders]\n[streams.orders]\n",
        "weir.toml:2:10: `orders` is declared both as a stream store and as a queue or topic; destination names are shared",
    );
    check_err(
        "[streams.orders]\nmax_count = 0\n",
        "weir.toml:2:13: stream store `orders`: `max_count` must be at least 1, found 0; omit it for no limit",
    );
    check_err(
        "[streams.orders]\nmax_size = 1\n",
        "weir.toml:2:1: unknown key `max_size` in [streams.orders] (valid keys: `retention_max_age`, `max_count`)",
    );
    check_err(
        "[streams.orders]\n[plugins.p]\npath = \"p.wasm\"\npublish = [\"orders\"]\n",
        "weir.toml:4:12: plugin `p` may publish to `orders`, but that is a stream store: events are appended to it only with expected revisions (through the stream API or an aggregate)",
    );
}

const NATS: &str = r#"
[broker]
kind = "nats"

[broker.nats]
servers = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
"#;

#[test]
fn broker_defaults_to_embedded() {
    assert!(matches!(
        parse(GOOD).unwrap().broker,
        BrokerConfig::Embedded
    ));
}

#[test]
fn nats_broker_defaults() {
    let c = parse(&format!("{NATS}{GOOD}")).unwrap();
    let n = c.broker.nats().expect("nats");
    assert_eq!(n.servers.len(), 2);
    assert_eq!(n.replicas, 3, "3 copies unless told otherwise");
    assert_eq!(n.partitions, 8);
    assert_eq!(n.duplicate_window, Duration::from_secs(600));
    assert_eq!(n.lease, Duration::from_secs(4));
    assert_eq!(n.auth, NatsAuth::None);
    assert_eq!(n.tls, NatsTls::default());
}

#[test]
fn nats_broker_options() {
    let text = r#"
[broker]
kind = "nats"
[broker.nats]
servers = ["tls://nats.example:4222"]
replicas = 1
partitions = 16
duplicate_window = "30m"
lease = "2s"
creds_file = "weir.creds"
tls_ca = "ca.pem"
tls_cert = "c.pem"
tls_key = "k.pem"
"#;
    let c = parse(&format!("{text}{GOOD}")).unwrap();
    let n = c.broker.nats().unwrap();
    assert_eq!((n.replicas, n.partitions), (1, 16));
    assert_eq!(n.duplicate_window, Duration::from_secs(1800));
    assert_eq!(n.lease, Duration::from_secs(2));
    assert!(
        matches!(&n.auth, NatsAuth::CredsFile(p) if p.is_absolute() && p.ends_with("weir.creds"))
    );
    assert!(n.tls.ca.as_ref().is_some_and(|p| p.ends_with("ca.pem")));
    assert!(n.tls.client.is_some());
    let user = r#"
[broker]
kind = "nats"
[broker.nats]
servers = ["nats://a:4222"]
user = "weir"
password = "secret"
"#;
    let c = parse(&format!("{user}{GOOD}")).unwrap();
    assert_eq!(
        c.broker.nats().unwrap().auth,
        NatsAuth::UserPassword("weir".into(), "secret".into())
    );
}

#[test]
fn nats_broker_refusals() {
    let cases: &[(&str, &str)] = &[
        (
            "[broker]\nkind = \"nats\"\n",
            "weir.toml:2:8: `broker.kind = \"nats\"` needs a `[broker.nats]` table with `servers = [\"nats://host:4222\", ...]`",
        ),
        (
            "[broker]\nkind = \"nats\"\n[broker.nats]\nservers = []\n",
            "weir.toml:4:11: `broker.nats.servers` must list at least one server URL, found none",
        ),
        (
            "[broker]\nkind = \"nats\"\n[broker.nats]\nservers = [\"127.0.0.1:4222\"]\n",
            "weir.toml:4:11: `broker.nats.servers`: expected URLs such as \"nats://127.0.0.1:4222\" or \"tls://host:4222\", found \"127.0.0.1:4222\"",
        ),
        (
            "[broker]\nkind = \"nats\"\n[broker.nats]\nservers = [\"nats://a:1\"]\nreplicas = 7\n",
            "weir.toml:5:12: `broker.nats.replicas` must be between 1 and 5 (JetStream's limit), found 7",
        ),
        (
            "[broker]\nkind = \"nats\"\n[broker.nats]\nservers = [\"nats://a:1\"]\nuser = \"u\"\n",
            "weir.toml:3:1: `broker.nats`: `user` and `password` go together; set both or neither",
        ),
        (
            "[broker]\nkind = \"nats\"\n[broker.nats]\nservers = [\"nats://a:1\"]\ntoken = \"t\"\ncreds_file = \"c\"\n",
            "weir.toml:3:1: `broker.nats`: set one way to authenticate (`creds_file`, `user` with `password`, or `token`), found several",
        ),
        (
            "[broker]\nkind = \"nats\"\nfsync = \"never\"\n[broker.nats]\nservers = [\"nats://a:1\"]\n",
            "weir.toml:3:9: `broker.fsync` applies to the embedded store only; on `kind = \"nats\"` durability is JetStream's (a publish is acknowledged once a majority of `replicas` stored it; Debian's nats-server 2.9 fsyncs lazily and has no `sync_interval`)",
        ),
        (
            "[broker]\nkind = \"nats\"\nsegment_size = \"64MiB\"\n[broker.nats]\nservers = [\"nats://a:1\"]\n",
            "weir.toml:3:16: `broker.segment_size` applies to the embedded store only; on `kind = \"nats\"` the JetStream servers lay out their files",
        ),
        (
            "[broker.nats]\nservers = [\"nats://a:1\"]\n",
            "weir.toml:1:1: `[broker.nats]` is read only with `broker.kind = \"nats\"`; set the kind or remove the table",
        ),
    ];
    for (text, expect) in cases {
        check_err(text, expect);
    }
}

#[test]
fn nats_broker_refuses_what_jetstream_cannot_keep() {
    let refused = [
        (
            "[queues.q]\ncompact = true\n",
            "`q`: `compact = true` is not available on `broker.kind = \"nats\"`",
        ),
        (
            "[queues.q]\nmax_depth = 10\n",
            "`q`: `max_depth` is not available on `broker.kind = \"nats\"`",
        ),
        (
            "[streams.orders]\n",
            "stream store `orders`: event-sourced stream stores are not available on `broker.kind = \"nats\"` yet",
        ),
        (
            "[queues.q]\n[plugins.p]\npath = \"p.wasm\"\n[[bindings]]\nsource = \"q\"\nplugin = \"p\"\nordering = \"key\"\npoison = \"park\"\n",
            "`poison = \"park\"` is not available on `broker.kind = \"nats\"` yet",
        ),
    ];
    for (text, expect) in refused {
        let e = parse(&format!("{NATS}{text}")).unwrap_err().to_string();
        assert!(e.contains(expect), "{e}");
        // The same on the embedded store is fine.
        parse(text).unwrap();
    }
}
