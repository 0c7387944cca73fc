//! A property test of the HTTP API: 10,000+ random requests (random methods, paths from the
//! route table with random segments and queries, random headers including `Authorization` and
//! `Content-Type`, random bodies and valid-ish JSON) against one running server. Written on raw
//! TCP so that nothing on the client side tidies the requests up.
//!
//! The property: no 5xx except the two documented answers that are not failures of the server
//! (504 `request_timeout`: a request nobody replied to in time; 503 `too_many_requests`), every
//! error answer is a JSON body with a code, the server never crashes or panics, and it still
//! answers afterwards.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Server, plugin_toml};

const TOKEN: &str = "fuzz-token-0123456789";
const REQUESTS_PER_THREAD: usize = 2600;
const THREADS: usize = 4;

/// xorshift64*: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Characters a path segment is made of: names, separators, things to percent-encode.
fn segment(rng: &mut Rng) -> String {
    let names = [
        "orders",
        "events",
        "orders.noop",
        "events.counter",
        "noop",
        "counter",
        "weir.replies",
        "0",
        "18446744073709551616",
        "-1",
        "..",
        "a~b",
        "orders.noop.dlq",
    ];
    if rng.chance(60) {
        return (*rng.pick(&names)).to_owned();
    }
    let len = rng.below(40);
    (0..len)
        .map(|_| {
            let b = rng.next() as u8;
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query(rng: &mut Rng, params: &[&str]) -> String {
    let all = [
        "from",
        "to",
        "limit",
        "key",
        "prefix",
        "start_after",
        "from_time_ms",
        "run",
        "bogus",
        "wait_ms",
        "timeout_ms",
    ];
    let values = [
        "0",
        "1",
        "5",
        "1000",
        "-3",
        "abc",
        "",
        "99999999999999999999",
        "%FF",
        "18446744073709551615",
    ];
    let mut q = Vec::new();
    for _ in 0..rng.below(4) {
        let name = if !params.is_empty() && rng.chance(70) {
            *rng.pick(params)
        } else {
            *rng.pick(&all)
        };
        // Waiting routes get short waits: the property is about answers, not patience.
        let value = match name {
            "wait_ms" | "timeout_ms" => (rng.below(30)).to_string(),
            _ => (*rng.pick(&values)).to_owned(),
        };
        q.push(format!("{name}={value}"));
    }
    if params.contains(&"timeout_ms") && !q.iter().any(|p| p.starts_with("timeout_ms=")) {
        q.push(format!("timeout_ms={}", rng.below(30)));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => Vec::new(),
        1 => rng.bytes(64),
        2 => rng.bytes(5000), // over max_message_size sometimes
        3 => br#"{"messages": [{"payload": "a"}, {"payload_hex": "00ff", "key": "k", "id": "i", "headers": {"h": "v"}}]}"#.to_vec(),
        4 => {
            let n = rng.below(5);
            let items: Vec<String> = (0..n)
                .map(|i| match rng.below(5) {
                    0 => format!("{{\"payload\": \"p{i}\"}}"),
                    1 => format!("{{\"payload_hex\": \"{}\"}}", "zz"),
                    2 => "{\"headers\": {\"bad name\": \"x\"}}".to_owned(),
                    3 => format!("{{\"id\": \"dup\", \"payload\": \"{}\"}}", "x".repeat(rng.below(3000))),
                    _ => "null".to_owned(),
                })
                .collect();
            format!("{{\"messages\": [{}]}}", items.join(",")).into_bytes()
        }
        _ => {
            let mut valid = br#"{"messages": [{"payload": "x"}]}"#.to_vec();
            let cut = rng.below(valid.len());
            valid.truncate(cut);
            valid
        }
    }
}

/// One request on its own connection; returns (status, body).
fn send(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("the server accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // A server may answer (413) and close before reading a large body: a write error is fine.
    let _ = stream.write_all(&request);
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    // The head first: an event stream (a follow) is not read to its end, which may never come.
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&response).to_ascii_lowercase();
    if !head.contains("content-type: text/event-stream") {
        let _ = stream.read_to_end(&mut response);
    }
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in answer to {method} {target}: {text:?}"));
    let body_start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    (status, response[body_start..].to_vec())
}

fn header_value(rng: &mut Rng) -> String {
    let len = rng.below(30);
    (0..len)
        .map(|_| (b' ' + (rng.next() % 95) as u8) as char)
        .collect::<String>()
        .trim()
        .to_owned()
}

fn fuzz(addr: String, seed: u64) -> (Vec<String>, BTreeMap<u16, usize>) {
    let mut rng = Rng(seed | 1);
    let routes = weir::api::routes();
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOO",
    ];
    let mut problems = Vec::new();
    let mut statuses = BTreeMap::new();
    for i in 0..REQUESTS_PER_THREAD {
        let route = rng.pick(&routes);
        let method = if rng.chance(75) {
            route.method.as_str().to_owned()
        } else {
            (*rng.pick(&methods)).to_owned()
        };
        let mut path = route
            .path
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    segment(&mut rng)
                } else {
                    s.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        if rng.chance(5) {
            path.push_str(&format!("/{}", segment(&mut rng)));
        }
        let params: Vec<&str> = route.query.iter().map(|q| q.0).collect();
        let target = format!("{path}{}", query(&mut rng, &params));
        let mut headers = Vec::new();
        match rng.below(10) {
            0 => {}
            1 => headers.push((
                "Authorization".to_owned(),
                format!("Bearer {}", header_value(&mut rng)),
            )),
            2 => headers.push(("Authorization".to_owned(), header_value(&mut rng))),
            _ => headers.push(("Authorization".to_owned(), format!("Bearer {TOKEN}"))),
        }
        if rng.chance(50) {
            let types = [
                "application/json",
                "text/plain",
                "application/octet-stream",
                "application/json; charset=utf-8",
                "multipart/form-data; boundary=x",
                "",
                "*/*",
            ];
            headers.push(("Content-Type".to_owned(), (*rng.pick(&types)).to_owned()));
        }
        for _ in 0..rng.below(4) {
            let names = [
                "weir-key",
                "weir-id",
                "weir-header-trace",
                "weir-header-x.y",
                "weir-header-",
                "weir-header-a_b",
                "accept",
                "x-anything",
            ];
            headers.push(((*rng.pick(&names)).to_owned(), header_value(&mut rng)));
        }
        let body = body(&mut rng);
        let (status, answer) = send(&addr, &method, &target, &headers, &body);
        *statuses.entry(status).or_insert(0) += 1;
        let what = format!(
            "#{i} {method} {target} {headers:?} body {} bytes -> {status} {}",
            body.len(),
            String::from_utf8_lossy(&answer)
        );
        let parsed: Option<Value> = serde_json::from_slice(&answer).ok();
        let code = parsed
            .as_ref()
            .and_then(|v| v["error"]["code"].as_str())
            .map(str::to_owned);
        if status >= 500
            && !matches!(
                (status, code.as_deref()),
                (504, Some("request_timeout")) | (503, Some("too_many_requests"))
            )
        {
            problems.push(format!("5xx: {what}"));
        }
        if status >= 400 && method != "HEAD" && code.is_none() {
            problems.push(format!("error without a JSON code: {what}"));
        }
    }
    (problems, statuses)
}

#[test]
fn random_requests_to_every_route_get_no_5xx_and_leave_the_server_answering() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_token = \"{TOKEN}\"\nmax_message_size = \"4KiB\"\n\
         [queues.orders]\nmax_depth = 5000\n[topics.events]\n{}{}\
         [[bindings]]\nsource = \"orders\"\nplugin = \"noop\"\n\
         [[bindings]]\nsource = \"events\"\nplugin = \"counter\"\n",
        plugin_toml("noop", ""),
        plugin_toml("counter", "")
    );
    let mut server = Server::start(dir.path(), &config);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || fuzz(addr, seed.wrapping_add(t as u64 * 0x9E37_79B9)))
        })
        .collect();
    let mut problems = Vec::new();
    let mut statuses = BTreeMap::new();
    for t in threads {
        let (p, s) = t.join().unwrap();
        problems.extend(p);
        for (status, n) in s {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    let elapsed = started.elapsed();
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems, first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{} requests in {elapsed:?} (seed {seed}), by status: {statuses:?}",
        THREADS * REQUESTS_PER_THREAD
    );
    // The requests reach the handlers, not only the router and the token check.
    let ok: usize = statuses.range(200..300).map(|(_, n)| n).sum();
    assert!(ok > THREADS * REQUESTS_PER_THREAD / 20, "{statuses:?}");
    assert!(statuses.get(&400).is_some_and(|n| *n > 100), "{statuses:?}");
    assert!(server.is_running(), "the server is still running");
    let (status, health) = server.get("/v1/health");
    assert_eq!((status, &health["status"]), (200, &Value::from("ok")));
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
}
