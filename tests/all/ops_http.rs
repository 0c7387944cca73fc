//! The HTTP API as an operator's programs meet it: bearer-token auth, bad input of every kind
//! refused with a 4xx and a stable code (and nothing changed), batch publishes, long polls, and
//! an OpenAPI document that matches the routes served.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, call, call_json, plugin_toml};

const TOKEN: &str = "test-token-0123456789";

fn config() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_token = \"{TOKEN}\"\nmax_message_size = \"1KiB\"\n\
         [queues.orders]\n[topics.events]\n{}\n[[bindings]]\nsource = \"orders\"\nplugin = \"noop\"\n",
        plugin_toml("noop", "")
    )
}

const AUTH: (&str, &str) = ("authorization", "Bearer test-token-0123456789");

/// The messages stored in `dest`, read with the token.
fn stored(server: &Server, dest: &str) -> Vec<Value> {
    let url = format!("{}/v1/destinations/{dest}/messages?limit=1000", server.url);
    let (status, body) = call_json("GET", &url, &[AUTH], b"");
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().cloned().unwrap_or_default()
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[test]
fn a_missing_or_wrong_token_gets_401_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let publish = format!("{}/v1/destinations/orders/messages", server.url);
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong-token-0123456789")],
        vec![("authorization", "Basic dGVzdDp0ZXN0")],
        vec![("authorization", "Bearer")],
        vec![("authorization", TOKEN)],
    ] {
        let (status, resp_headers, text) = call("POST", &publish, &headers, b"x");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_error(status, &body, 401, "unauthorized");
        assert_eq!(
            resp_headers
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer realm=\"weir\"")
        );
        for path in [
            "/v1/stats",
            "/metrics",
            "/v1/openapi.json",
            "/v1/bindings/orders.noop/dlq",
        ] {
            let (status, body) = call_json("GET", &format!("{}{path}", server.url), &headers, b"");
            assert_error(status, &body, 401, "unauthorized");
        }
        let (status, body) = call_json(
            "POST",
            &format!("{}/v1/bindings/orders.noop/replay", server.url),
            &headers,
            b"",
        );
        assert_error(status, &body, 401, "unauthorized");
    }
    assert!(stored(&server, "orders").is_empty(), "nothing was stored");
    // Refused before routing, and counted.
    let (status, _, metrics) = call("GET", &format!("{}/metrics", server.url), &[AUTH], b"");
    assert_eq!(status, 200);
    for line in [
        "weir_http_requests_total{route=\"unauthenticated\",method=\"GET\",status=\"401\"} 20",
        "weir_http_requests_total{route=\"unauthenticated\",method=\"POST\",status=\"401\"} 10",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let (status, _) = call_json("GET", &format!("{}/v1/health", server.url), &[], b"");
    assert_eq!(status, 200, "liveness needs no token");
    let (status, _) = call_json("POST", &publish, &[AUTH], b"x");
    assert_eq!(status, 201);
    assert_eq!(stored(&server, "orders").len(), 1);
}

/// Reads one HTTP/1.1 response (status line, headers, a `content-length` body); returns its
/// status.
fn read_response(from: &mut impl BufRead) -> u16 {
    let mut line = String::new();
    from.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("a status line, not {line:?}"));
    let mut length = 0;
    loop {
        line.clear();
        from.read_line(&mut line).unwrap();
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    from.read_exact(&mut body).unwrap();
    status
}

#[test]
fn random_method_tokens_do_not_grow_the_request_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let stream = TcpStream::connect(server.url.strip_prefix("http://").unwrap()).unwrap();
    let mut answers = BufReader::new(stream.try_clone().unwrap());
    let mut requests = std::io::BufWriter::new(stream);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut methods = BTreeSet::new();
    // Without the token (refused before routing), with it on a route (405) and on no route.
    let cases = [
        ("/v1/stats", "", 401),
        (
            "/v1/stats",
            "authorization: Bearer test-token-0123456789\r\n",
            405,
        ),
        (
            "/v1/nowhere",
            "authorization: Bearer test-token-0123456789\r\n",
            404,
        ),
    ];
    for i in 0..10_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let method = format!("M{seed:X}");
        let (path, auth, want) = cases[i % cases.len()];
        write!(
            requests,
            "{method} {path} HTTP/1.1\r\nhost: weir\r\ncontent-length: 0\r\n{auth}\r\n"
        )
        .unwrap();
        requests.flush().unwrap();
        assert_eq!(read_response(&mut answers), want, "{method} {path}");
        methods.insert(method);
    }
    assert_eq!(methods.len(), 10_000);
    let (status, _, metrics) = call("GET", &format!("{}/metrics", server.url), &[AUTH], b"");
    assert_eq!(status, 200);
    let series: BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weir_http_requests_total{"))
        .collect();
    let want: BTreeSet<&str> = [
        "weir_http_requests_total{route=\"/v1/stats\",method=\"other\",status=\"405\"} 3333",
        "weir_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 3333",
        "weir_http_requests_total{route=\"unauthenticated\",method=\"other\",status=\"401\"} 3334",
    ]
    .into();
    assert_eq!(series, want, "in:\n{metrics}");
}

/// Method, URL, headers, body, expected status and code.
type Case<'a> = (
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
    &'a str,
);

#[test]
fn bad_input_gets_a_4xx_with_a_clear_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let url = |p: &str| format!("{}{p}", server.url);
    let json_type = ("content-type", "application/json");
    let cases: Vec<Case> = vec![
        ("POST", url("/v1/destinations/orders/messages/batch"), vec![json_type], b"{not json".to_vec(), 400, "invalid_json"),
        ("POST", url("/v1/destinations/orders/messages/batch"), vec![json_type], b"{\"messages\": [{\"payload\": 1}]}".to_vec(), 400, "invalid_json"),
        ("POST", url("/v1/destinations/orders/messages/batch"), vec![json_type], b"{\"messages\": [], \"extra\": 1}".to_vec(), 400, "invalid_json"),
        ("POST", url("/v1/destinations/orders/messages/batch"), vec![("content-type", "text/plain")], b"{\"messages\": []}".to_vec(), 415, "unsupported_media_type"),
        ("POST", url("/v1/destinations/orders/messages/batch"), vec![json_type], b"{\"messages\": [{\"payload\": \"ok\"}, {\"payload\": \"bad\", \"headers\": {\"no spaces\": \"x\"}}]}".to_vec(), 400, "invalid_message"),
        ("POST", url("/v1/destinations/orders/messages"), vec![], vec![b'x'; 2048], 413, "payload_too_large"),
        ("POST", url("/v1/destinations/orders/messages/batch"), vec![json_type], format!("{{\"messages\": [{{\"payload\": \"{}\"}}]}}", "y".repeat(2000)).into_bytes(), 413, "payload_too_large"),
        ("POST", url("/v1/destinations/nowhere/messages"), vec![], b"x".to_vec(), 404, "unknown_destination"),
        ("POST", url("/v1/destinations/nowhere/messages/batch"), vec![json_type], b"{\"messages\": [{\"payload\": \"x\"}]}".to_vec(), 404, "unknown_destination"),
        ("GET", url("/v1/destinations/nowhere/messages"), vec![], vec![], 404, "unknown_destination"),
        ("POST", url("/v1/destinations/bad%20name/messages"), vec![], b"x".to_vec(), 400, "invalid_name"),
        ("POST", url("/v1/destinations/.hidden/messages"), vec![], b"x".to_vec(), 400, "invalid_name"),
        ("POST", url("/v1/destinations/%FF/messages"), vec![], b"x".to_vec(), 400, "invalid_path"),
        ("POST", url("/v1/bindings/bad%20name/replay"), vec![], vec![], 400, "invalid_name"),
        ("POST", url("/v1/bindings/nobody/replay"), vec![], vec![], 404, "unknown_binding"),
        ("POST", url("/v1/bindings/orders.noop/replay?from=5&to=1"), vec![], vec![], 400, "invalid_range"),
        ("POST", url("/v1/bindings/orders.noop/replay?to=99"), vec![], vec![], 400, "invalid_range"),
        ("GET", url("/v1/destinations/orders/messages?from=x"), vec![], vec![], 400, "invalid_query"),
        ("GET", url("/v1/destinations/orders/messages?wait_ms=600000"), vec![], vec![], 400, "invalid_query"),
        ("GET", url("/v1/destinations/orders/messages?bogus=1"), vec![], vec![], 400, "invalid_query"),
        ("GET", url("/v1/bindings/orders.noop/dlq/notanumber"), vec![], vec![], 400, "invalid_path"),
        ("GET", url("/v1/nothing/here"), vec![], vec![], 404, "not_found"),
        ("DELETE", url("/v1/destinations/orders/messages"), vec![], vec![], 405, "method_not_allowed"),
        ("POST", url("/v1/stats"), vec![], vec![], 405, "method_not_allowed"),
        ("POST", url("/v1/destinations/orders/messages"), vec![("weir-header-bad!name", "x")], b"x".to_vec(), 400, "invalid_message"),
        ("POST", url("/v1/destinations/orders/messages"), vec![("weir-id", "")], b"x".to_vec(), 400, "invalid_message"),
        ("POST", url("/v1/destinations/weir.replies/messages"), vec![], b"x".to_vec(), 403, "reserved_destination"),
    ];
    for (method, url, mut headers, body, want_status, want_code) in cases {
        headers.push(AUTH);
        let (status, _, text) = call(method, &url, &headers, &body);
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {url}: not JSON (status {status}): {text}"));
        assert_eq!(
            (status, parsed["error"]["code"].as_str()),
            (want_status, Some(want_code)),
            "{method} {url}: {parsed}"
        );
    }
    assert!(stored(&server, "orders").is_empty(), "nothing was stored");
    let stats = call_json("GET", &url("/v1/stats"), &[AUTH], b"").1;
    assert_eq!(
        stats["bindings"]["orders.noop"]["invocations"], 0,
        "{stats}"
    );
}

#[test]
fn a_batch_is_stored_in_order_and_its_ids_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let url = format!("{}/v1/destinations/events/messages/batch", server.url);
    let batch = json!({ "messages": [
        { "payload": "one", "key": "k", "headers": { "trace": "t1" } },
        { "payload_hex": "00ff", "id": "fixed-id" },
        { "payload": "three" },
    ]});
    let body = serde_json::to_vec(&batch).unwrap();
    let (status, answer) = call_json(
        "POST",
        &url,
        &[AUTH, ("content-type", "application/json")],
        &body,
    );
    assert_eq!(status, 201, "{answer}");
    let offsets: Vec<u64> = answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 1, 2]);
    let messages = stored(&server, "events");
    assert_eq!(messages.len(), 3);
    assert_eq!(
        (
            &messages[0]["payload"],
            &messages[0]["key"],
            &messages[0]["headers"]
        ),
        (&json!("one"), &json!("k"), &json!([["trace", "t1"]]))
    );
    assert_eq!(
        (&messages[1]["payload_hex"], &messages[1]["id"]),
        (&json!("00ff"), &json!("fixed-id"))
    );
    // The same id again: nothing new stored, the original offset answered.
    let again =
        serde_json::to_vec(&json!({ "messages": [{ "payload": "x", "id": "fixed-id" }] })).unwrap();
    let (status, answer) = call_json("POST", &url, &[AUTH], &again);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            &answer["messages"][0]["offset"],
            &answer["messages"][0]["duplicate"]
        ),
        (&json!(1), &json!(true))
    );
    assert_eq!(stored(&server, "events").len(), 3);
}

#[test]
fn a_long_poll_answers_as_soon_as_a_message_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let read = format!(
        "{}/v1/destinations/events/messages?from=0&wait_ms=20000",
        server.url
    );
    // Nothing there: an empty answer once the wait is over.
    let started = Instant::now();
    let (status, body) = call_json(
        "GET",
        &format!(
            "{}/v1/destinations/events/messages?from=0&wait_ms=200",
            server.url
        ),
        &[AUTH],
        b"",
    );
    assert_eq!(
        (status, body["messages"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(body["next"], 0);

    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let (status, body) = call_json("GET", &read, &[AUTH], b"");
        (status, body, started.elapsed())
    });
    // Publish until the poller has its answer (it may not have started waiting yet).
    let publish = format!("{}/v1/destinations/events/messages", server.url);
    let (status, _) = call_json("POST", &publish, &[AUTH], b"hello");
    assert_eq!(status, 201);
    let (status, body, waited) = waiting.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["payload"], "hello", "{body}");
    assert_eq!(body["next"], 1, "{body}");
    assert!(
        waited < Duration::from_secs(15),
        "answered at once, not at the deadline: {waited:?}"
    );
}

#[test]
fn a_follower_gets_server_sent_events_and_resumes_after_the_last_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let publish = format!("{}/v1/destinations/events/messages", server.url);
    call_json("POST", &publish, &[AUTH, ("weir-key", "a")], b"one");
    let stream = format!("{}/v1/destinations/events/messages/stream", server.url);
    let follower = {
        let url = format!("{stream}?from=0&limit=3");
        std::thread::spawn(move || call("GET", &url, &[AUTH], b""))
    };
    call_json("POST", &publish, &[AUTH], b"two");
    call_json("POST", &publish, &[AUTH, ("weir-key", "a")], b"three");
    let (status, headers, text) = follower.join().unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let events = sse(&text);
    let payloads: Vec<(&str, &Value)> = events
        .iter()
        .map(|(id, data)| (id.as_str(), &data["payload"]))
        .collect();
    assert_eq!(
        payloads,
        [
            ("0", &json!("one")),
            ("1", &json!("two")),
            ("2", &json!("three"))
        ]
    );
    // Reconnecting after event 0, only key `a`: the third.
    let (status, _, text) = call(
        "GET",
        &format!("{stream}?key=a&limit=1"),
        &[AUTH, ("last-event-id", "0")],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(sse(&text)[0].1["payload"], "three");
    let (status, body) = call_json(
        "GET",
        &format!("{stream}?limit=1"),
        &[AUTH, ("last-event-id", "x")],
        b"",
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_header"))
    );
}

/// The events of a server-sent event stream: (id, data as JSON).
fn sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| e.contains("data:"))
        .map(|e| {
            let field = |name: &str| {
                e.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            assert_eq!(field("event:"), "message", "{e}");
            (field("id:"), serde_json::from_str(&field("data:")).unwrap())
        })
        .collect()
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let (status, doc) = call_json(
        "GET",
        &format!("{}/v1/openapi.json", server.url),
        &[AUTH],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let served: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let table: BTreeSet<(String, String)> = weir::api::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(served, table, "the document is the route table");
    assert_eq!(doc, weir::api::openapi(), "served as built");

    // Every documented route is routed (whatever the handler then says of the made-up
    // arguments), and each path answers 405 for a method it does not list.
    for (method, path) in &served {
        // Made-up values for path parameters (routes added later get `x1` for theirs).
        let concrete = path
            .split('/')
            .map(|seg| match seg {
                "{name}" => "orders.noop",
                "{offset}" => "0",
                s if s.starts_with('{') => "x1",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/");
        // A request waits for its reply, a follow for new messages: not long.
        let query = if path.ends_with("/requests") {
            "?timeout_ms=1"
        } else if path.ends_with("/stream") {
            "?limit=0"
        } else {
            ""
        };
        let url = format!("{}{concrete}{query}", server.url);
        let (status, _, text) = call(method, &url, &[AUTH], b"");
        let code = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        assert!(
            !matches!(code.as_deref(), Some("not_found" | "method_not_allowed")),
            "{method} {path} is documented but not routed: {status} {text}"
        );
        let params: Vec<&Value> = doc["paths"][path][method.to_lowercase()]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "path")
            .collect();
        assert_eq!(params.len(), path.matches('{').count(), "{method} {path}");
        let (status, body) = call_json("PUT", &format!("{}{concrete}", server.url), &[AUTH], b"");
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (405, Some("method_not_allowed")),
            "PUT {path}"
        );
    }
}
