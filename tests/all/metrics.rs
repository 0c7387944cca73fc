//! `GET /metrics`: valid Prometheus text exposition (checked by a strict parser written here),
//! and counters that move as messages are published and handled.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{Server, plugin_toml, wait_for};

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text format (0.0.4) strictly: every sample belongs to a family declared by one
/// `# TYPE` before it, families are not split, names and labels are well-formed, values parse,
/// and histograms have cumulative buckets ending in `+Inf` equal to `_count`.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut done: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect(&at));
            assert!(valid_name(name), "{at}: bad name");
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().expect(&at);
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{at}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "{at}: TYPE twice"
                    );
                    if let Some(prev) = current.replace(name.to_owned()) {
                        done.push(prev);
                    }
                }
                _ => panic!("{at}: unknown comment"),
            }
            continue;
        }
        assert!(!line.is_empty(), "{at}: empty line");
        let (name, labels, value) = sample(line, &at);
        let family = current.as_deref().expect(&at);
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| types.get(*b).map(String::as_str) == Some("histogram"))
            .unwrap_or(&name);
        assert_eq!(base, family, "{at}: sample outside its family");
        assert!(!done.contains(&family.to_owned()), "{at}: family split");
        samples.push((name, labels, value));
    }
    // Histograms: cumulative buckets, +Inf equals _count.
    for (name, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (n, labels, v) in samples.iter().filter(|s| s.0 == format!("{name}_bucket")) {
            let mut rest = labels.clone();
            let le = rest.remove("le").expect("bucket with le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect(n)
            };
            series
                .entry(format!("{rest:?}"))
                .or_default()
                .push((le, *v));
        }
        for (labels, buckets) in series {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{name}{labels}"
            );
            assert_eq!(buckets.last().unwrap().0, f64::INFINITY, "{name}{labels}");
        }
        for (_, labels, count) in samples.iter().filter(|s| s.0 == format!("{name}_count")) {
            let inf = samples.iter().find(|s| {
                s.0 == format!("{name}_bucket")
                    && s.1.get("le").map(String::as_str) == Some("+Inf")
                    && s.1.iter().filter(|(k, _)| *k != "le").eq(labels.iter())
            });
            assert_eq!(inf.map(|s| s.2), Some(*count), "{name}{labels:?}");
        }
    }
    samples
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn sample(line: &str, at: &str) -> (String, BTreeMap<String, String>, f64) {
    let name_end = line.find(['{', ' ']).expect(at);
    let name = &line[..name_end];
    assert!(valid_name(name), "{at}: bad metric name");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            let (start, c) = chars.next().expect(at);
            if c == '}' {
                end = Some(start);
                break;
            }
            let mut key = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            assert!(
                valid_name(&key) && !key.starts_with("__"),
                "{at}: bad label name {key:?}"
            );
            assert_eq!(chars.next().map(|c| c.1), Some('"'), "{at}");
            let mut value = String::new();
            loop {
                match chars.next().expect(at).1 {
                    '\\' => match chars.next().expect(at).1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => panic!("{at}: bad escape \\{c}"),
                    },
                    '"' => break,
                    '\n' => panic!("{at}: newline in label"),
                    c => value.push(c),
                }
            }
            assert!(labels.insert(key, value).is_none(), "{at}: label twice");
            match chars.next().expect(at).1 {
                ',' => {}
                '}' => {
                    end = chars.peek().map(|(i, _)| *i);
                    break;
                }
                c => panic!("{at}: unexpected {c:?}"),
            }
        }
        rest = &body[end.expect(at)..];
    }
    let value = rest.strip_prefix(' ').expect(at);
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("{at}: bad value")),
    };
    (name.to_owned(), labels, value)
}

/// The value of the sample `name` whose labels include `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one sample {name} {with:?}, found {found:?}"
    );
    found[0]
}

fn scrape(server: &Server) -> (String, Vec<Sample>) {
    let (status, headers, text) =
        crate::support::call("GET", &format!("{}/metrics", server.url), &[], b"");
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let samples = parse(&text);
    (text, samples)
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    for bad in [
        "x 1\n",                                      // no TYPE
        "# TYPE x gauge\nx{a=\"1} 1\n",               // unterminated label
        "# TYPE x gauge\nx{a=\"1\"} one\n",           // bad value
        "# TYPE x gauge\n# TYPE y gauge\ny 1\nx 2\n", // split family
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
    let ok = parse("# HELP x X.\n# TYPE x gauge\nx{a=\"q\\\"\\n\"} 1.5\n");
    assert_eq!(ok[0].1["a"], "q\"\n");
}

#[test]
fn metrics_are_valid_exposition_and_move_as_messages_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.work]\n[queues.bad]\n{}{}\
         [[bindings]]\nsource = \"work\"\nplugin = \"counter\"\nguarantee = \"exactly-once\"\n\
         [[bindings]]\nsource = \"bad\"\nplugin = \"fail\"\nmax_attempts = 2\nbackoff = {{ initial = \"1ms\", max = \"2ms\" }}\n",
        plugin_toml("counter", ""),
        plugin_toml("fail", "")
    );
    let server = Server::start(dir.path(), &config);
    let (text, before) = scrape(&server);
    let work = [("binding", "work.counter")];
    assert_eq!(value(&before, "weir_binding_invocations_total", &work), 0.0);
    assert!(text.contains(
        "weir_binding_handler_seconds_bucket{binding=\"work.counter\",plugin=\"counter\",le=\""
    ));
    let version = before
        .iter()
        .find(|s| s.0 == "weir_plugin_info" && s.1["plugin"] == "counter")
        .map(|s| s.1["version"].clone())
        .unwrap();
    assert_eq!(
        version, "1",
        "the version label is the active version's number"
    );
    let appends_before = value(&before, "weir_storage_append_seconds_count", &[]);

    let n = 25;
    for i in 0..n {
        server.publish("work", &format!("m{i}"), &[]);
    }
    server.publish("bad", "doomed", &[("weir-header-retryable", "true")]);
    server.wait_binding("work.counter", "acked", n);
    server.wait_binding("bad.fail", "dead_lettered", 1);

    let after = wait_for(
        "metrics to show the handled messages",
        Duration::from_secs(30),
        || {
            let (_, s) = scrape(&server);
            (value(
                &s,
                "weir_binding_messages_total",
                &[("binding", "bad.fail"), ("outcome", "dead_lettered")],
            ) == 1.0)
                .then_some(s)
        },
    );
    let n = n as f64;
    assert_eq!(
        value(
            &after,
            "weir_binding_invocations_total",
            &[("binding", "work.counter"), ("plugin", "counter")]
        ),
        n
    );
    assert_eq!(
        value(
            &after,
            "weir_binding_messages_total",
            &[("binding", "work.counter"), ("outcome", "acked")]
        ),
        n
    );
    assert_eq!(
        value(&after, "weir_binding_handler_seconds_count", &work),
        n
    );
    assert!(value(&after, "weir_binding_handler_seconds_sum", &work) > 0.0);
    assert_eq!(
        value(
            &after,
            "weir_destination_messages_total",
            &[("destination", "work")]
        ),
        n
    );
    assert_eq!(value(&after, "weir_binding_lag", &work), 0.0);
    assert_eq!(
        value(&after, "weir_destination_depth", &[("destination", "work")]),
        0.0
    );
    assert_eq!(
        value(&after, "weir_storage_append_seconds_count", &[]) - appends_before,
        n + 1.0
    );
    assert!(value(&after, "weir_storage_fsync_seconds_count", &[]) >= 1.0);
    assert!(value(&after, "weir_storage_write_seconds_count", &[]) >= 1.0);
    // The failing plugin: two attempts, one retry, a handler error each time, one dead letter.
    let bad = [("binding", "bad.fail")];
    assert_eq!(value(&after, "weir_binding_invocations_total", &bad), 2.0);
    assert_eq!(value(&after, "weir_binding_retries_total", &bad), 1.0);
    let failures: f64 = after
        .iter()
        .filter(|s| s.0 == "weir_binding_failures_total" && s.1["binding"] == "bad.fail")
        .map(|s| s.2)
        .sum();
    assert_eq!(failures, 2.0);
    assert_eq!(value(&after, "weir_binding_dlq_messages", &bad), 1.0);
    let published = [
        ("route", "/v1/destinations/{name}/messages"),
        ("method", "POST"),
        ("status", "201"),
    ];
    assert_eq!(
        value(&after, "weir_http_requests_total", &published),
        n + 1.0
    );
}
