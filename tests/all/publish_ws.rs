//! The streaming publish (`GET /v1/destinations/{name}/publish` upgraded to a WebSocket),
//! through the real binary: acknowledgements in order with increasing offsets, text messages
//! with keys, headers and ids (a resent id is a duplicate with the original offset), a bad
//! message refusing only itself, an oversized one closing the connection with 1009 after the
//! earlier ones were acknowledged, a connection cut mid-frame or one that never reads its
//! acknowledgements harming no other, HTTP errors before the upgrade, and SIGTERM closing with
//! 1001 without losing anything acknowledged; and `weir publish --lines`, the CLI on it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::{Server, wait_for};

/// `server.max_message_size` of these tests.
const LIMIT: usize = 64 << 10;
/// The largest WebSocket message the server reads: room for a payload of `LIMIT` as hex in
/// JSON (see `runtime/src/api/publish_ws.rs`).
const WS_LIMIT: usize = 2 * LIMIT + (64 << 10);

fn config() -> String {
    "[server]\nlisten = \"127.0.0.1:0\"\nmax_message_size = \"64KiB\"\n\
     [queues.q]\n[topics.t]\n[streams.s]\n"
        .to_owned()
}

type Ws = tungstenite::WebSocket<TcpStream>;

fn addr(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

fn ws_url(s: &Server, dest: &str) -> String {
    format!("ws://{}/v1/destinations/{dest}/publish", addr(s))
}

/// A WebSocket client of the streaming publish on `stream`.
fn handshake(s: &Server, dest: &str, stream: TcpStream) -> Ws {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (ws, resp) = tungstenite::client(ws_url(s, dest), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake to {dest}: {e}"));
    assert_eq!(resp.status(), 101);
    ws
}

fn connect(s: &Server, dest: &str) -> Ws {
    handshake(s, dest, TcpStream::connect(addr(s)).unwrap())
}

/// Sends messages in one flush.
fn send_all(ws: &mut Ws, messages: impl IntoIterator<Item = Message>) {
    for m in messages {
        ws.write(m).expect("writing a message");
    }
    ws.flush().expect("flushing messages");
}

/// The next message from the server that is not a ping or pong.
fn next_message(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("a message from the server") {
            Message::Ping(_) | Message::Pong(_) => {}
            m => return m,
        }
    }
}

/// The next acknowledgement, parsed.
fn next_ack(ws: &mut Ws) -> Value {
    match next_message(ws) {
        Message::Text(t) => serde_json::from_str(t.as_str())
            .unwrap_or_else(|e| panic!("an acknowledgement is JSON: {e}: {}", t.as_str())),
        other => panic!("expected an acknowledgement, got {other:?}"),
    }
}

/// The next acknowledgement, which must be for `seq` and a success; returns it.
fn next_ok(ws: &mut Ws, seq: u64) -> Value {
    let ack = next_ack(ws);
    assert_eq!(ack["seq"], seq, "{ack}");
    assert!(ack["offset"].is_u64(), "message {seq} was refused: {ack}");
    assert!(ack["id"].is_string(), "{ack}");
    ack
}

/// Every message stored in `dest`, in offset order.
fn stored(s: &Server, dest: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let (status, page) = s.get(&format!(
            "/v1/destinations/{dest}/messages?from={from}&limit=1000"
        ));
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap();
        if messages.is_empty() {
            return all;
        }
        all.extend(messages.iter().cloned());
        from = page["next"].as_u64().unwrap();
    }
}

/// Publishes `n` binary messages `<prefix><i>` on a fresh connection, each acknowledged.
fn publish_some(s: &Server, dest: &str, prefix: &str, n: u64) {
    let mut ws = connect(s, dest);
    send_all(
        &mut ws,
        (0..n).map(|i| Message::binary(format!("{prefix}{i}").into_bytes())),
    );
    for i in 0..n {
        next_ok(&mut ws, i);
    }
    ws.close(None).ok();
}

/// A masked client frame (RFC 6455 section 5.2).
fn frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Sends an upgrade request for `path` on a new connection and reads the answer's head (and
/// body, when it has one); returns the connection, the status and the body.
fn raw_upgrade(addr: &str, path: &str) -> (TcpStream, u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    // Byte by byte, so that nothing after the head is taken from the connection.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => panic!(
                "no answer head to the upgrade of {path}: {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let length = head
        .lines()
        .find_map(|l| {
            let l = l.to_ascii_lowercase();
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (stream, status, String::from_utf8(body).unwrap())
}

/// The server is up, answers, and never panicked.
fn assert_healthy(s: &mut Server) {
    assert!(s.is_running(), "the server is running");
    let (status, health) = s.get("/v1/health");
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    let stderr = s.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
}

#[test]
fn a_thousand_binary_messages_are_acknowledged_and_stored_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config());
    let mut ws = connect(&s, "q");
    // All in one write: the server reads them in batches and acknowledges them in order.
    send_all(
        &mut ws,
        (0..1000).map(|i| Message::binary(format!("m{i}").into_bytes())),
    );
    let mut acks: Vec<Value> = Vec::new();
    for seq in 0..1000u64 {
        let ack = next_ok(&mut ws, seq);
        assert!(ack.get("duplicate").is_none(), "{ack}");
        if let Some(prev) = acks.last() {
            assert!(
                ack["offset"].as_u64() > Value::as_u64(&prev["offset"]),
                "offsets increase: {prev} then {ack}"
            );
        }
        acks.push(ack);
    }
    let (status, page) = s.get("/v1/destinations/q/messages?from=0&limit=1000");
    assert_eq!(status, 200, "{page}");
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1000);
    for (i, (m, ack)) in messages.iter().zip(&acks).enumerate() {
        assert_eq!(m["payload"], format!("m{i}"), "{m}");
        assert_eq!(m["offset"], ack["offset"], "{m} {ack}");
        assert_eq!(m["id"], ack["id"], "{m} {ack}");
    }
    // A topic takes them alike.
    publish_some(&s, "t", "t", 10);
    assert_eq!(stored(&s, "t").len(), 10);
    ws.close(None).unwrap();
}

#[test]
fn text_messages_carry_keys_headers_and_ids_and_a_resent_id_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config());
    let mut ws = connect(&s, "q");
    let texts = [
        json!({"payload": "hello", "key": "k1", "id": "order-1", "headers": {"trace": "abc", "x.y": "z"}}),
        json!({"payload_hex": "00ff10", "key": "k2"}),
        // The same id again, in the same read as the first: a duplicate of it.
        json!({"payload": "hello again", "id": "order-1"}),
        json!({}),
    ];
    send_all(&mut ws, texts.iter().map(|t| Message::text(t.to_string())));
    let first = next_ok(&mut ws, 0);
    assert_eq!(first["id"], "order-1");
    assert!(first.get("duplicate").is_none(), "{first}");
    let second = next_ok(&mut ws, 1);
    assert_ne!(second["id"], "order-1");
    let dup = next_ok(&mut ws, 2);
    assert_eq!(
        (&dup["offset"], &dup["id"], &dup["duplicate"]),
        (&first["offset"], &first["id"], &json!(true)),
        "{dup}"
    );
    let empty = next_ok(&mut ws, 3);
    // Resent once the original is acknowledged, on this connection and on another one.
    ws.send(Message::text(
        json!({"payload": "hello", "id": "order-1"}).to_string(),
    ))
    .unwrap();
    let dup = next_ok(&mut ws, 4);
    assert_eq!(
        (&dup["offset"], &dup["duplicate"]),
        (&first["offset"], &json!(true))
    );
    let mut other = connect(&s, "q");
    other
        .send(Message::text(
            json!({"payload": "hello", "id": "order-1", "key": "k1"}).to_string(),
        ))
        .unwrap();
    let dup = next_ok(&mut other, 0);
    assert_eq!(
        (&dup["offset"], &dup["duplicate"]),
        (&first["offset"], &json!(true))
    );

    let messages = stored(&s, "q");
    assert_eq!(messages.len(), 3, "{messages:?}");
    let m = &messages[0];
    assert_eq!(
        (&m["offset"], &m["id"], &m["key"], &m["payload"]),
        (
            &first["offset"],
            &json!("order-1"),
            &json!("k1"),
            &json!("hello")
        ),
        "{m}"
    );
    assert_eq!(m["headers"], json!([["trace", "abc"], ["x.y", "z"]]), "{m}");
    let m = &messages[1];
    assert_eq!(
        (&m["offset"], &m["id"], &m["key"], &m["payload_hex"]),
        (
            &second["offset"],
            &second["id"],
            &json!("k2"),
            &json!("00ff10")
        ),
        "{m}"
    );
    let m = &messages[2];
    assert_eq!(
        (&m["offset"], &m["payload"]),
        (&empty["offset"], &json!(""))
    );
}

#[test]
fn a_bad_message_is_refused_alone_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &config());
    let mut ws = connect(&s, "q");
    let ok = |i: usize| Message::text(json!({"payload": format!("ok{i}")}).to_string());
    // (message, the error code of its acknowledgement)
    let bad: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "invalid_message"),
        (Message::text("[1, 2]"), "invalid_message"),
        (
            Message::text(r#"{"payload": "x", "colour": "red"}"#),
            "invalid_message",
        ),
        (
            Message::text(r#"{"payload": "x", "payload_hex": "00"}"#),
            "invalid_message",
        ),
        (Message::text(r#"{"payload_hex": "0"}"#), "invalid_message"),
        (
            Message::text(
                json!({"payload": "x", "headers": {"weir-replay-for": "q.b"}}).to_string(),
            ),
            "invalid_message",
        ),
        (
            Message::text(json!({"payload": "x", "headers": {"bad name": "v"}}).to_string()),
            "invalid_message",
        ),
        (
            Message::text(json!({"payload": "x", "key": "k".repeat(1025)}).to_string()),
            "invalid_message",
        ),
        (
            Message::text(json!({"payload": "x", "id": "i".repeat(257)}).to_string()),
            "invalid_message",
        ),
        (
            Message::text(json!({"payload": "x".repeat(LIMIT + 1)}).to_string()),
            "payload_too_large",
        ),
        (
            Message::text(json!({"payload_hex": "ab".repeat(LIMIT + 1)}).to_string()),
            "payload_too_large",
        ),
        // Binary, over max_message_size but within what the WebSocket reads.
        (Message::binary(vec![7u8; LIMIT + 1]), "payload_too_large"),
    ];
    // Each bad message between two good ones, all in one write.
    let mut messages = vec![ok(0)];
    let mut expected = vec![None];
    for (i, (m, code)) in bad.iter().enumerate() {
        messages.push(m.clone());
        expected.push(Some(*code));
        messages.push(ok(i + 1));
        expected.push(None);
    }
    send_all(&mut ws, messages);
    let mut stored_acks = Vec::new();
    for (seq, code) in expected.iter().enumerate() {
        let ack = next_ack(&mut ws);
        assert_eq!(ack["seq"], seq, "{ack}");
        match code {
            None => {
                assert!(ack["offset"].is_u64(), "message {seq}: {ack}");
                stored_acks.push(ack);
            }
            Some(code) => {
                assert_eq!(ack["error"]["code"], *code, "message {seq}: {ack}");
                assert!(ack["error"]["message"].is_string(), "{ack}");
                assert!(ack.get("offset").is_none(), "{ack}");
            }
        }
    }
    // A payload of exactly the limit is fine.
    ws.send(Message::binary(vec![b'a'; LIMIT])).unwrap();
    let at_limit = next_ok(&mut ws, expected.len() as u64);
    let messages = stored(&s, "q");
    assert_eq!(
        messages.len(),
        bad.len() + 2,
        "only the good ones are stored"
    );
    for (i, (m, ack)) in messages.iter().zip(&stored_acks).enumerate() {
        assert_eq!(
            (&m["offset"], &m["payload"]),
            (&ack["offset"], &json!(format!("ok{i}"))),
            "{m}"
        );
    }
    assert_eq!(messages.last().unwrap()["offset"], at_limit["offset"]);
    assert_healthy(&mut s);
}

#[test]
fn a_message_over_the_websocket_limit_closes_with_1009_after_the_earlier_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &config());
    let mut ws = connect(&s, "q");
    send_all(
        &mut ws,
        (0..5)
            .map(|i| Message::binary(format!("before{i}").into_bytes()))
            .chain([Message::binary(vec![1u8; WS_LIMIT + 1])]),
    );
    let acks: Vec<Value> = (0..5).map(|i| next_ok(&mut ws, i)).collect();
    match next_message(&mut ws) {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009, "{frame:?}"),
        other => panic!("expected a close with 1009, got {other:?}"),
    }
    let messages = stored(&s, "q");
    assert_eq!(messages.len(), 5);
    for (i, (m, ack)) in messages.iter().zip(&acks).enumerate() {
        assert_eq!(
            (&m["offset"], &m["payload"]),
            (&ack["offset"], &json!(format!("before{i}")))
        );
    }
    // A fragmented message over the limit is refused alike, whatever its frames' sizes.
    let (mut raw, status, _) = raw_upgrade(&addr(&s), "/v1/destinations/q/publish");
    assert_eq!(status, 101);
    let piece = vec![2u8; 64 << 10];
    let mut bytes = frame(0x02, &piece, [1, 2, 3, 4]); // binary, not final
    for _ in 0..(WS_LIMIT / piece.len()) {
        bytes.extend(frame(0x00, &piece, [5, 6, 7, 8])); // continuation, not final
    }
    bytes.extend(frame(0x80, b"end", [9, 9, 9, 9])); // the final continuation
    let _ = raw.write_all(&bytes);
    let mut ws =
        tungstenite::WebSocket::from_raw_socket(raw, tungstenite::protocol::Role::Client, None);
    match next_message(&mut ws) {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009, "{frame:?}"),
        other => panic!("expected a close with 1009, got {other:?}"),
    }
    assert_eq!(stored(&s, "q").len(), 5);
    publish_some(&s, "q", "after", 3);
    assert_eq!(stored(&s, "q").len(), 8);
    assert_healthy(&mut s);
}

#[test]
fn a_connection_cut_mid_frame_harms_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &config());
    let addr = addr(&s);
    let path = "/v1/destinations/q/publish";
    let claim = |len: u64| {
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        header
    };
    // Claims 150 KiB (within the limit), sends 1 KiB of it and closes.
    let (mut cut, status, _) = raw_upgrade(&addr, path);
    assert_eq!(status, 101);
    cut.write_all(&claim(150 << 10)).unwrap();
    cut.write_all(&[0u8; 1024]).unwrap();
    drop(cut);
    // Claims 2^63 - 1 bytes and closes at once.
    let (mut huge, status, _) = raw_upgrade(&addr, path);
    assert_eq!(status, 101);
    let _ = huge.write_all(&claim(u64::MAX >> 1));
    drop(huge);
    // Sends a good message, then half a frame header, and stays connected without a word more.
    let (mut stuck, status, _) = raw_upgrade(&addr, path);
    assert_eq!(status, 101);
    stuck
        .write_all(&frame(0x82, b"whole", [1, 1, 1, 1]))
        .unwrap();
    stuck.write_all(&claim(150 << 10)[..5]).unwrap();
    // Claims 150 KiB and stays connected after sending half of it.
    let (mut half, status, _) = raw_upgrade(&addr, path);
    assert_eq!(status, 101);
    half.write_all(&claim(150 << 10)).unwrap();
    half.write_all(&vec![0u8; 75 << 10]).unwrap();

    // Another connection publishes and is answered meanwhile.
    publish_some(&s, "q", "other", 100);
    let messages = stored(&s, "q");
    let others = messages
        .iter()
        .filter(|m| {
            m["payload"]
                .as_str()
                .is_some_and(|p| p.starts_with("other"))
        })
        .count();
    assert_eq!(others, 100);
    // The stuck connection's whole message was acknowledged to it.
    let mut stuck =
        tungstenite::WebSocket::from_raw_socket(stuck, tungstenite::protocol::Role::Client, None);
    assert!(next_ack(&mut stuck)["offset"].is_u64());
    assert!(messages.iter().any(|m| m["payload"] == "whole"));
    drop(stuck);
    drop(half);
    publish_some(&s, "q", "later", 10);
    assert_healthy(&mut s);
}

/// A client that sends and never reads its acknowledgements (with a small receive window, so
/// that they back up into the server soon) holds up no other connection.
#[test]
fn a_connection_that_never_reads_its_acknowledgements_holds_up_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &config());
    let stream = {
        let addr = addr(&s).parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let std_stream = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(addr).await.unwrap().into_std().unwrap()
        });
        std_stream.set_nonblocking(false).unwrap();
        std_stream
    };
    let shut = stream.try_clone().unwrap();
    let mut slow = handshake(&s, "q", stream);
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop) = (Arc::clone(&written), Arc::clone(&stop));
        std::thread::spawn(move || {
            for i in 0..500_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if slow
                    .write(Message::binary(format!("slow{i:08}").into_bytes()))
                    .is_err()
                {
                    break;
                }
                if i % 256 == 255 && slow.flush().is_err() {
                    break;
                }
                written.store(i + 1, Ordering::Relaxed);
            }
        })
    };
    // Its acknowledgements back up into the server, which stops reading it (at most
    // MAX_UNACKED read and unacknowledged, then its socket buffers fill): its writes block.
    let mut last = (0, Instant::now());
    wait_for(
        "the slow client's writes to block",
        Duration::from_secs(60),
        || {
            let now = written.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            }
            (now > 0 && last.1.elapsed() > Duration::from_millis(500)).then_some(())
        },
    );
    let blocked_at = written.load(Ordering::Relaxed);
    // Another connection is answered promptly, round after round.
    let started = Instant::now();
    let mut fast = connect(&s, "t");
    let mut seq = 0;
    for round in 0..20 {
        send_all(
            &mut fast,
            (0..50).map(|i| Message::binary(format!("fast{round}-{i}").into_bytes())),
        );
        for _ in 0..50 {
            next_ok(&mut fast, seq);
            seq += 1;
        }
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "1,000 acknowledgements took {took:?}"
    );
    assert_eq!(stored(&s, "t").len(), 1000);
    let sent = written.load(Ordering::Relaxed);
    assert!(sent < 500_000, "the slow client was never held back");
    stop.store(true, Ordering::Relaxed);
    let _ = shut.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    eprintln!(
        "the slow client was held at {blocked_at} messages written ({sent} at the end, {} stored); \
         the other got 1,000 acknowledgements in {took:?}",
        stored(&s, "q").len()
    );
    assert_healthy(&mut s);
    publish_some(&s, "q", "after", 10);
}

#[test]
fn wrong_destinations_and_plain_requests_are_http_errors_before_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &config());
    let addr = addr(&s);
    for (path, want, code) in [
        ("/v1/destinations/nope/publish", 404, "unknown_destination"),
        ("/v1/destinations/s/publish", 403, "stream_store"),
        (
            "/v1/destinations/weir.replies/publish",
            403,
            "reserved_destination",
        ),
        ("/v1/destinations/bad%20name/publish", 400, "invalid_name"),
    ] {
        let (_, status, body) = raw_upgrade(&addr, path);
        let body: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {body}"));
        assert_eq!(
            (status, &body["error"]["code"]),
            (want, &json!(code)),
            "{path}: {body}"
        );
    }
    // The WebSocket client sees the refusal as an HTTP answer.
    match tungstenite::connect(ws_url(&s, "nope")) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        Err(e) => panic!("expected an HTTP 404, got {e}"),
        Ok(_) => panic!("a WebSocket to an unknown destination was opened"),
    }
    // Without the upgrade.
    for dest in ["q", "nope"] {
        let (status, body) = s.get(&format!("/v1/destinations/{dest}/publish"));
        assert!((400..500).contains(&status), "{status} {body}");
        assert_eq!(body["error"]["code"], "websocket_required", "{body}");
    }
    assert_healthy(&mut s);
}

/// What a client saw of its connection: the acknowledgements, and the close code if the server
/// sent one.
struct Seen {
    acks: Vec<Value>,
    close: Option<u16>,
}

/// Publishes `m<seq>` with up to `window` in flight until the connection ends; `count` follows
/// the acknowledgements.
async fn publish_until_closed(url: String, window: usize, count: Arc<AtomicU64>) -> Seen {
    use futures_util::{SinkExt, StreamExt};
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("a WebSocket");
    let (mut tx, mut rx) = ws.split();
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let writer = {
        let permits = Arc::clone(&permits);
        tokio::spawn(async move {
            for n in 0u64.. {
                let Ok(p) = permits.acquire().await else {
                    break;
                };
                p.forget();
                if tx
                    .feed(Message::binary(format!("m{n}").into_bytes()))
                    .await
                    .is_err()
                {
                    break;
                }
                if (permits.available_permits() == 0 || n % 64 == 63) && tx.flush().await.is_err() {
                    break;
                }
            }
        })
    };
    let mut seen = Seen {
        acks: Vec::new(),
        close: None,
    };
    while let Some(Ok(m)) = rx.next().await {
        match m {
            Message::Text(t) => {
                seen.acks.push(serde_json::from_str(t.as_str()).unwrap());
                count.fetch_add(1, Ordering::Relaxed);
                permits.add_permits(1);
            }
            Message::Close(frame) => {
                seen.close = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    permits.close();
    let _ = writer.await;
    seen
}

/// SIGTERM while a client sends as fast as it can (never waiting for acknowledgements): it gets
/// every acknowledgement of what was stored, then a close with 1001, and a restart shows all of
/// it and nothing else.
#[test]
fn sigterm_closes_with_1001_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let client = rt.spawn(publish_until_closed(
        ws_url(&s, "q"),
        1 << 24,
        Arc::clone(&count),
    ));
    wait_for("5,000 acknowledgements", Duration::from_secs(60), || {
        (count.load(Ordering::Relaxed) >= 5000).then_some(())
    });
    let stderr_path = dir.path().join("weir.stderr");
    assert_eq!(s.stop(), Some(0), "weir exits 0 on SIGTERM");
    let seen = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), client).await })
        .expect("the connection ends once weir is gone")
        .unwrap();
    let stderr = std::fs::read_to_string(stderr_path).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");

    // In order; the stored ones first, then refusals because weir is shutting down.
    let mut acked = Vec::new();
    for (seq, ack) in seen.acks.iter().enumerate() {
        assert_eq!(ack["seq"], seq, "{ack}");
        if let Some(offset) = ack["offset"].as_u64() {
            assert_eq!(acked.len(), seq, "a success after a refusal: {ack}");
            acked.push((offset, ack["id"].clone()));
        } else {
            assert_eq!(ack["error"]["code"], "shutting_down", "{ack}");
        }
    }
    eprintln!(
        "{} acknowledgements, {} stored, close code {:?}",
        seen.acks.len(),
        acked.len(),
        seen.close
    );
    assert_eq!(seen.close, Some(1001), "the close on shutdown");

    let s = Server::start_existing(dir.path());
    let messages = stored(&s, "q");
    let by_offset: std::collections::HashMap<u64, &Value> = messages
        .iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m))
        .collect();
    for (seq, (offset, id)) in acked.iter().enumerate() {
        let m = by_offset
            .get(offset)
            .unwrap_or_else(|| panic!("acknowledged message {seq} at offset {offset} is missing"));
        assert_eq!(
            (&m["payload"], &m["id"]),
            (&json!(format!("m{seq}")), id),
            "{m}"
        );
    }
    // Everything stored was acknowledged before the close.
    assert_eq!(messages.len(), acked.len(), "stored but not acknowledged");
}

/// `weir publish --lines` publishes each line of stdin over the streaming publish, in order,
/// with `--key` and `--header` on each; refusals are clear errors with a non-zero exit.
#[test]
fn weir_publish_lines_streams_each_line_as_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config());
    let env = [("WEIR_SERVER", s.url.as_str())];
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let (code, out, err) = crate::support::weir_with(
        &["publish", "q", "--lines", "-", "--window", "64"],
        dir.path(),
        &env,
        input.as_bytes(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("published 2000 messages to q, offsets 0..=1999"),
        "{out}"
    );
    let messages = stored(&s, "q");
    assert_eq!(messages.len(), 2000);
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m["payload"], json!(format!("line {i}")), "{m}");
    }

    // Keys, headers and CRLF line ends; one JSON acknowledgement per line with --json.
    let (code, out, err) = crate::support::weir_with(
        &[
            "publish", "q", "--lines", "-", "--key", "k1", "-H", "h=v", "--json",
        ],
        dir.path(),
        &env,
        b"a\r\nb\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    let acks: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(acks.len(), 2, "{out}");
    assert_eq!(
        (&acks[0]["seq"], &acks[1]["offset"]),
        (&json!(0), &json!(2001))
    );
    let tail = &stored(&s, "q")[2000..];
    for (m, payload) in tail.iter().zip(["a", "b"]) {
        assert_eq!(
            (&m["payload"], &m["key"], &m["headers"]),
            (&json!(payload), &json!("k1"), &json!([["h", "v"]])),
            "{m}"
        );
    }

    // An unknown destination, a stream store, a line over the limit.
    let (code, _, err) = crate::support::weir_with(
        &["publish", "nope", "--lines", "-"],
        dir.path(),
        &env,
        b"x\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("404") && err.contains("nope"), "{err}");
    let (code, _, err) =
        crate::support::weir_with(&["publish", "s", "--lines", "-"], dir.path(), &env, b"x\n");
    assert_ne!(code, 0);
    assert!(err.contains("stream store"), "{err}");
    let mut big = b"before\n".to_vec();
    big.extend(vec![b'z'; WS_LIMIT + 10]);
    big.extend(b"\nafter\n");
    let (code, _, err) =
        crate::support::weir_with(&["publish", "q", "--lines", "-"], dir.path(), &env, &big);
    assert_ne!(code, 0);
    assert!(err.contains("1009"), "{err}");
    let tail = stored(&s, "q");
    assert_eq!(
        tail.last().unwrap()["payload"],
        json!("before"),
        "the line before it is stored"
    );
    // A message within the WebSocket limit but over max_message_size is refused alone.
    let mut over = b"one\n".to_vec();
    over.extend(vec![b'y'; LIMIT + 1]);
    over.extend(b"\ntwo\n");
    let (code, _, err) =
        crate::support::weir_with(&["publish", "q", "--lines", "-"], dir.path(), &env, &over);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("line 2: refused"), "{err}");
    let tail = stored(&s, "q");
    let n = tail.len();
    assert_eq!(
        (&tail[n - 2]["payload"], &tail[n - 1]["payload"]),
        (&json!("one"), &json!("two"))
    );
}
