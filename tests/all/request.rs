//! Request/reply through the real binary: a request gets its handler's reply over HTTP and from
//! `weir request`, a request nobody answers times out with a typed error, a handler may answer by
//! publishing to the reply-to, and the reply inbox is weir's own.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Server, plugin_toml, wait_for, weir};

/// A server whose queue `counts` is consumed by `counter` (replies with its total when the
/// message has header `reply`) and `words` by `enrich` (answers by publishing with header
/// `reply-by-publish`; it has no publish grant).
fn start(dir: &std::path::Path, extra: &str) -> Server {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[queues.counts]\n[queues.words]\n{}{}\
         [[bindings]]\nsource = \"counts\"\nplugin = \"counter\"\n\
         [[bindings]]\nsource = \"words\"\nplugin = \"enrich\"\nmax_attempts = 1\n",
        plugin_toml("counter", ""),
        plugin_toml("enrich", ""),
    );
    Server::start(dir, &config)
}

fn request(server: &Server, query: &str, payload: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    server.post(
        &format!("/v1/destinations/{query}"),
        payload.as_bytes(),
        headers,
    )
}

#[test]
fn a_request_gets_its_handlers_reply_over_http_and_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let (status, body) = request(
        &server,
        "counts/requests",
        "one",
        &[("weir-header-reply", "yes"), ("weir-key", "k")],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"]["payload"], "1", "{body}");
    assert_eq!(body["reply"]["offset"], 0);
    assert_eq!(body["reply"]["destination"], "weir.replies");
    assert_eq!(body["request"]["destination"], "counts");
    assert_eq!(body["request"]["offset"], 0);
    let correlation_id = body["correlation_id"].as_str().unwrap();
    assert!(!correlation_id.is_empty());

    let url = server.url.as_str();
    let (code, out, err) = weir(
        &["request", "counts", "two", "-H", "reply=", "--server", url],
        dir.path(),
    );
    assert_eq!((code, out.as_str()), (0, "2\n"), "{err}");
    let (code, out, err) = weir(
        &[
            "request",
            "counts",
            "three",
            "--header",
            "reply=yes",
            "--key",
            "k",
            "--timeout",
            "10s",
            "--json",
            "--server",
            url,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let body: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(body["reply"]["payload"], "3", "{body}");
    assert_eq!(body["reply"]["offset"], 2);
    assert_ne!(body["correlation_id"].as_str(), Some(correlation_id));

    // The counter moves just after the commit that made the reply visible.
    let stats = server.wait_binding("counts.counter", "replied", 3);
    assert_eq!(stats["requests_waiting"], 0);
    assert!(
        stats["destinations"].get("weir.replies").is_none(),
        "the inbox is not a user destination: {stats}"
    );
}

#[test]
fn a_request_nobody_answers_times_out_promptly_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    // Without header `reply`, counter acknowledges and never replies.
    let started = Instant::now();
    let (status, body) = request(&server, "counts/requests?timeout_ms=300", "x", &[]);
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "request_timeout");
    assert_eq!(
        body["error"]["message"],
        "no reply from `counts` within 300ms"
    );
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(5)).contains(&took),
        "answered after {took:?}"
    );

    let started = Instant::now();
    let (code, out, err) = weir(
        &[
            "request",
            "counts",
            "x",
            "--timeout",
            "300ms",
            "--server",
            &server.url,
        ],
        dir.path(),
    );
    let took = started.elapsed();
    assert_eq!(code, 3, "no reply exits 3: {out}{err}");
    assert_eq!(err.trim(), "error: no reply from counts within 300ms");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    // Both requests were handled (acknowledged without a reply), and nobody waits any more.
    let stats = server.wait_binding("counts.counter", "acked", 2);
    assert_eq!(stats["bindings"]["counts.counter"]["replied"], 0);
    assert_eq!(stats["requests_waiting"], 0);
}

/// (path after `/v1/destinations/`, headers, expected status, expected error code)
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);

#[test]
fn bad_requests_are_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    server.publish("counts", "first", &[("weir-id", "taken")]);
    let cases: &[Case] = &[
        ("counts/requests?timeout_ms=0", &[], 400, "invalid_timeout"),
        (
            "counts/requests?timeout_ms=300001",
            &[],
            400,
            "invalid_timeout",
        ),
        ("counts/requests?timeout_ms=soon", &[], 400, "invalid_query"),
        ("counts/requests?wait=1", &[], 400, "invalid_query"),
        ("nowhere/requests", &[], 404, "unknown_destination"),
        ("bad%20name/requests", &[], 400, "invalid_name"),
        (
            "counts/requests",
            &[("weir-header-", "v")],
            400,
            "invalid_message",
        ),
        (
            "counts/requests",
            &[("weir-id", "taken")],
            409,
            "duplicate_request",
        ),
        ("weir.replies/requests", &[], 403, "reserved_destination"),
        ("weir.replies/messages", &[], 403, "reserved_destination"),
    ];
    for (query, headers, status, code) in cases {
        let (got, body) = request(&server, query, "x", headers);
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{query}: {body}"
        );
    }
    let stats = server.stats();
    assert_eq!(stats["destinations"]["counts"]["messages"], 1);
    assert_eq!(stats["requests_waiting"], 0);
    let (_, inbox) = server.get("/v1/destinations/weir.replies/messages");
    assert_eq!(inbox["end"], 0, "{inbox}");

    // A config may not declare the inbox.
    std::fs::write(dir.path().join("inbox.toml"), "[queues.\"weir.replies\"]\n").unwrap();
    let (code, _, err) = weir(&["check", "--config", "inbox.toml"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("inbox.toml:1:9: `weir.replies` is reserved for weir's reply inbox"),
        "{err}"
    );
}

#[test]
fn a_handler_may_answer_by_publishing_to_the_reply_to_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let (status, body) = request(
        &server,
        "words/requests",
        "hello",
        &[("weir-header-reply-by-publish", "yes")],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"]["payload"], "HELLO");
    assert_eq!(
        body["reply"]["headers"],
        serde_json::json!([["enriched-by", "enrich"]])
    );

    // Without a request to answer, the inbox is like any destination enrich was not granted.
    server.publish(
        "words",
        "sneaky",
        &[("weir-header-forward-to", "weir.replies")],
    );
    server.wait_binding("words.enrich", "dead_lettered", 1);
    let (_, dlq) = server.get("/v1/destinations/words.enrich.dlq/messages");
    let reason = dlq["messages"][0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "weir-dlq-reason")
        .map(|h| h[1].as_str().unwrap().to_owned());
    assert_eq!(
        reason.as_deref(),
        Some("enrich could not forward: publish refused: plugin may not publish to `weir.replies`")
    );
    let (_, inbox) = server.get("/v1/destinations/weir.replies/messages");
    assert_eq!(inbox["end"], 1, "only the reply is in the inbox: {inbox}");
}

#[test]
fn the_reply_inbox_drops_replies_older_than_reply_retention() {
    let dir = tempfile::tempdir().unwrap();
    let broker = "[broker]\nsegment_size = \"1MiB\"\nretention_interval = \"10ms\"\nreply_retention = \"1ms\"";
    let server = start(dir.path(), broker);
    // Replies of 200 KiB: six fill the inbox's first 1 MiB segment, which seals.
    let payload = "a".repeat(200 << 10);
    for _ in 0..8 {
        let (status, body) = request(
            &server,
            "words/requests",
            &payload,
            &[("weir-header-reply-by-publish", "yes")],
        );
        assert_eq!(status, 200, "{}", body["error"]);
    }
    let first = wait_for(
        "retention to remove the inbox's sealed segment",
        Duration::from_secs(30),
        || {
            let (_, inbox) = server.get("/v1/destinations/weir.replies/messages?limit=1");
            let first = inbox["messages"][0]["offset"].as_u64()?;
            (first > 0).then_some(first)
        },
    );
    assert!(first < 8, "the segment being written is kept: {first}");
}

#[test]
fn shutdown_ends_waiting_requests_instead_of_waiting_out_their_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let url = format!(
        "{}/v1/destinations/counts/requests?timeout_ms=120000",
        server.url
    );
    let waiting = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.post(url).send("nobody replies").unwrap();
        let status = resp.status().as_u16();
        let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        (status, body)
    });
    wait_for("the request to wait", Duration::from_secs(30), || {
        (server.stats()["requests_waiting"] == 1).then_some(())
    });
    let started = Instant::now();
    assert_eq!(server.stop(), Some(0));
    let (status, body) = waiting.join().unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("shutting_down")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown took {:?}",
        started.elapsed()
    );
}
