//! A property test of the HTTP API: 10,000+ random requests (random methods, paths from the
//! route table with random segments and queries, random headers including `Authorization` and
//! `Content-Type`, random bodies and valid-ish JSON) against one running server. Written on raw
//! TCP so that nothing on the client side tidies the requests up.
//!
//! The property: no 5xx except the two documented answers that are not failures of the server
//! (504 `request_timeout`: a request nobody replied to in time; 503 `too_many_requests`), every
//! error answer is a JSON body with a code, the server never crashes or panics, and it still
//! answers afterwards.
//!
//! The streaming publish (`GET /v1/destinations/{name}/publish`, a WebSocket) gets its own
//! fuzz: random upgrade handshakes (some missing a header, a wrong version, no token) followed by
//! random bytes: masked frames with random opcodes, flags and payloads (JSON and not, over the
//! size limits), unmasked frames, truncated frames, garbage. Besides the above, every answer the
//! server writes on a WebSocket is well-formed: unmasked frames, acknowledgements in order
//! (`seq` from 0) with an offset or an error code, and the connection ends once the client has
//! stopped sending.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
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

const WS_CONNECTIONS_PER_THREAD: usize = 600;
const WS_THREADS: usize = 2;
/// `server.max_message_size` of the WebSocket fuzz.
const WS_LIMIT: usize = 4 << 10;

/// A client frame: `first` holds FIN, RSV and the opcode; masked with `mask` when given.
fn ws_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let bit = if mask.is_some() { 0x80 } else { 0 };
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(bit | n as u8),
        n if n <= 0xFFFF => {
            f.push(bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            f.extend_from_slice(&m);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A data message's payload: JSON messages (good and bad), random bytes, and sizes over
/// `max_message_size` and over what the WebSocket reads (2 x limit + 64 KiB).
fn ws_payload(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 => Vec::new(),
        1 => rng.bytes(64),
        2 => rng.bytes(WS_LIMIT + 2000),
        3 => format!(
            r#"{{"payload": "p{}", "key": "k", "id": "id-{}", "headers": {{"h": "v"}}}}"#,
            rng.below(100),
            rng.below(20)
        )
        .into_bytes(),
        4 => format!(
            r#"{{"payload_hex": "{}"}}"#,
            "ab".repeat(rng.below(WS_LIMIT + 100))
        )
        .into_bytes(),
        5 => {
            let bad = [
                r#"{"payload": "x", "colour": 1}"#,
                r#"{"payload": "x", "headers": {"weir-replay-for": "x"}}"#,
                r#"{"payload": "x", "headers": {"bad name": "x"}}"#,
                r#"{"payload_hex": "zz"}"#,
                r#"{"payload": 5}"#,
                r#"{"payload": "x""#,
                "null",
                "[]",
            ];
            rng.pick(&bad).as_bytes().to_vec()
        }
        6 if rng.chance(15) => vec![b'x'; 2 * WS_LIMIT + (64 << 10) + 1 + rng.below(1000)],
        _ => rng.bytes(300),
    }
}

/// What a client sends after the handshake: well-formed messages only (`clean`: text, binary
/// and pings, good and bad publishes), or anything.
fn ws_bytes(rng: &mut Rng, clean: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..=rng.below(if clean { 40 } else { 12 }) {
        let mask = [rng.next() as u8, rng.next() as u8, rng.next() as u8, 0x5A];
        if clean {
            let opcode = *rng.pick(&[0x1, 0x1, 0x2, 0x2, 0x9]);
            let payload = match opcode {
                0x9 => rng.bytes(125),
                0x1 => String::from_utf8_lossy(&ws_payload(rng))
                    .into_owned()
                    .into_bytes(),
                _ => ws_payload(rng),
            };
            out.extend(ws_frame(0x80 | opcode, &payload, Some(mask)));
            continue;
        }
        match rng.below(12) {
            // A masked frame: mostly binary or text data, sometimes a control frame or any
            // opcode, a fragment, reserved bits.
            0..=6 => {
                let opcode = match rng.below(12) {
                    0..=4 => 0x2,
                    5..=8 => 0x1,
                    9 => 0x9,
                    10 => 0x0,
                    _ => rng.below(16) as u8,
                };
                let fin = if rng.chance(90) { 0x80 } else { 0 };
                let rsv = if rng.chance(5) {
                    (rng.below(7) as u8 + 1) << 4
                } else {
                    0
                };
                let payload = if opcode >= 8 && rng.chance(90) {
                    rng.bytes(125)
                } else {
                    ws_payload(rng)
                };
                out.extend(ws_frame(fin | rsv | opcode, &payload, Some(mask)));
            }
            // A close, with a random code and reason.
            7 => {
                let mut payload = (rng.next() as u16).to_be_bytes().to_vec();
                payload.extend(rng.bytes(20));
                payload.truncate(rng.below(payload.len() + 1));
                out.extend(ws_frame(0x88, &payload, Some(mask)));
            }
            // Unmasked (clients must mask).
            8 => out.extend(ws_frame(0x82, &rng.bytes(50), None)),
            // A frame cut anywhere, its header claiming more than follows.
            9 => {
                let f = ws_frame(0x82, &ws_payload(rng), Some(mask));
                out.extend_from_slice(&f[..rng.below(f.len())]);
            }
            // A length of up to 2^64 - 1.
            10 => {
                out.extend_from_slice(&[0x82, 0xFF]);
                out.extend_from_slice(&rng.next().to_be_bytes());
                out.extend_from_slice(&mask);
                out.extend(rng.bytes(100));
            }
            _ => out.extend(rng.bytes(100)),
        }
    }
    out
}

/// The server's frames in `bytes` as (first byte, payload); an incomplete one at the end is
/// left out. Errors name a masked server frame.
fn server_frames(mut bytes: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        if bytes[1] & 0x80 != 0 {
            return Err(format!("a masked frame from the server: {:?}", &bytes[..2]));
        }
        let (len, head) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if bytes.len() < head + len {
            break;
        }
        frames.push((bytes[0], bytes[head..head + len].to_vec()));
        bytes = &bytes[head + len..];
    }
    Ok(frames)
}

/// How connections ended, for the coverage checks.
#[derive(Default)]
struct WsOutcome {
    upgraded: usize,
    refused: BTreeMap<u16, usize>,
    stored: usize,
    errors: usize,
    closes: BTreeMap<u16, usize>,
}

fn fuzz_ws(addr: String, seed: u64) -> (Vec<String>, WsOutcome) {
    let mut rng = Rng(seed | 1);
    let mut problems = Vec::new();
    let mut outcome = WsOutcome::default();
    for i in 0..WS_CONNECTIONS_PER_THREAD {
        let dest = if rng.chance(70) {
            (*rng.pick(&["orders", "events"])).to_owned()
        } else {
            segment(&mut rng)
        };
        let target = format!("/v1/destinations/{dest}/publish");
        let mut headers = vec![
            ("Host", addr.clone()),
            ("Connection", "Upgrade".to_owned()),
            ("Upgrade", "websocket".to_owned()),
            ("Sec-WebSocket-Version", "13".to_owned()),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
            ("Authorization", format!("Bearer {TOKEN}")),
        ];
        let mut method = "GET";
        if rng.chance(15) {
            match rng.below(4) {
                0 => {
                    let n = 1 + rng.below(headers.len() - 1);
                    headers.remove(n);
                }
                1 => headers[3].1 = (*rng.pick(&["8", "", "13, 8", "x"])).to_owned(),
                2 => headers[5].1 = header_value(&mut rng),
                _ => method = "POST",
            }
        }
        let mut stream = TcpStream::connect(&addr).expect("the server accepts connections");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let what = format!("#{i} {method} {target} {headers:?}");
        if stream.write_all(head.as_bytes()).is_err() {
            problems.push(format!("{what}: the handshake could not be sent"));
            continue;
        }
        // The answer's head, byte by byte: what follows a 101 is the server's frames.
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => answer.push(byte[0]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        let Some(status) = text
            .strip_prefix("http/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
        else {
            problems.push(format!("{what}: no status line: {text:?}"));
            continue;
        };
        if status != 101 {
            *outcome.refused.entry(status).or_insert(0) += 1;
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let body_read = stream.read_exact(&mut body);
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            if status >= 500 || body_read.is_err() || code.is_none() {
                problems.push(format!(
                    "{what}: {status} {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            continue;
        }
        outcome.upgraded += 1;
        let clean = rng.chance(40);
        let sent = ws_bytes(&mut rng, clean);
        // The server may close first (after a refused frame): a write error is fine.
        let _ = stream.write_all(&sent);
        let _ = stream.shutdown(Shutdown::Write);
        let mut from_server = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => from_server.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => {
                    problems.push(format!(
                        "{what}: the connection did not end after the client's {} bytes: {e}",
                        sent.len()
                    ));
                    break;
                }
            }
        }
        let frames = match server_frames(&from_server) {
            Ok(f) => f,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                continue;
            }
        };
        let mut seq = 0u64;
        for (first, payload) in frames {
            match first & 0x0F {
                0x1 => {
                    let ack: Value = match serde_json::from_slice(&payload) {
                        Ok(v) => v,
                        Err(e) => {
                            problems.push(format!("{what}: an acknowledgement is not JSON: {e}"));
                            break;
                        }
                    };
                    if ack["seq"] != seq {
                        problems.push(format!("{what}: expected seq {seq}: {ack}"));
                    }
                    seq += 1;
                    if ack["offset"].is_u64() && ack["id"].is_string() {
                        outcome.stored += 1;
                    } else if ack["error"]["code"].is_string() {
                        outcome.errors += 1;
                    } else {
                        problems.push(format!("{what}: neither stored nor refused: {ack}"));
                    }
                }
                0x8 => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    *outcome.closes.entry(code).or_insert(0) += 1;
                }
                0x9 | 0xA => {}
                other => {
                    problems.push(format!("{what}: a frame of opcode {other} from the server"))
                }
            }
        }
    }
    (problems, outcome)
}

#[test]
fn random_websocket_handshakes_and_frames_leave_the_server_answering() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_token = \"{TOKEN}\"\nmax_message_size = \"4KiB\"\n\
         [queues.orders]\n[topics.events]\n[streams.store]\n"
    );
    let mut server = Server::start(dir.path(), &config);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let started = Instant::now();
    let threads: Vec<_> = (0..WS_THREADS)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || fuzz_ws(addr, seed.wrapping_add(t as u64 * 0x9E37_79B9)))
        })
        .collect();
    let mut problems = Vec::new();
    let mut all = WsOutcome::default();
    for t in threads {
        let (p, o) = t.join().unwrap();
        problems.extend(p);
        all.upgraded += o.upgraded;
        all.stored += o.stored;
        all.errors += o.errors;
        for (k, n) in o.refused {
            *all.refused.entry(k).or_insert(0) += n;
        }
        for (k, n) in o.closes {
            *all.closes.entry(k).or_insert(0) += n;
        }
    }
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
        "{} connections in {:?} (seed {seed}): {} upgraded, refused by status {:?}, {} stored, \
         {} refused messages, closes by code {:?}",
        WS_THREADS * WS_CONNECTIONS_PER_THREAD,
        started.elapsed(),
        all.upgraded,
        all.refused,
        all.stored,
        all.errors,
        all.closes
    );
    // The frames reach the publish, not only the handshake.
    assert!(
        all.upgraded > WS_THREADS * WS_CONNECTIONS_PER_THREAD / 2,
        "{}",
        all.upgraded
    );
    assert!(
        all.stored > 0 && all.errors > 0,
        "{} {}",
        all.stored,
        all.errors
    );
    assert!(all.closes.contains_key(&1002), "{:?}", all.closes);
    assert!(server.is_running(), "the server is still running");
    let (status, health) = server.get("/v1/health");
    assert_eq!((status, &health["status"]), (200, &Value::from("ok")));
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
}
