//! Parked keys through the real binary: a key parked by a message that failed for good holds
//! its later messages while other keys flow, is listed in stats with why and since when, stays
//! parked across a restart without running again, and is released by `weir binding unpark` and
//! `POST /v1/bindings/{name}/unpark`, its message retried from the first attempt and its later
//! messages following in order.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Server, plugin, wait_for, weir};

const WAIT: Duration = Duration::from_secs(30);

/// Binding `work`: `orders` through plugin `p` (the `enrich` example: it forwards the payload
/// upper-cased to `orders.enriched`, and fails retryably for a message whose `forward-to`
/// header names a queue it may not publish to), key ordering, parking after 2 attempts.
fn config() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [queues.orders]\n[queues.\"orders.enriched\"]\n[queues.out]\n\
         [plugins.p]\npath = {:?}\npublish = [\"orders.enriched\", \"out\"]\n\
         [[bindings]]\nname = \"work\"\nsource = \"orders\"\nplugin = \"p\"\n\
         ordering = \"key\"\npoison = \"park\"\nmax_attempts = 2\n\
         backoff = {{ initial = \"10ms\", jitter = 0.0 }}\n",
        plugin("enrich").display().to_string()
    )
}

/// Publishes `payload` with key `key`; `poison` makes `enrich` fail on it.
fn publish(server: &Server, key: &str, payload: &str, poison: bool) {
    let mut headers = vec![("weir-key", key)];
    if poison {
        headers.push(("weir-header-forward-to", "nowhere"));
    }
    server.publish("orders", payload, &headers);
}

/// The payloads stored in `dest`, in order.
fn payloads(server: &Server, dest: &str) -> Vec<String> {
    let (status, body) = server.get(&format!("/v1/destinations/{dest}/messages?limit=1000"));
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap().to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The binding's entry in stats.
fn work(server: &Server) -> Value {
    server.stats()["bindings"]["work"].clone()
}

/// The keys listed parked in stats.
fn parked_keys(b: &Value) -> Vec<String> {
    b["parked"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|k| k["key"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the binding's stats satisfy `done`.
fn wait_work(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let what = format!("{what} (server stderr: {})", server.stderr());
    wait_for(&what, WAIT, || {
        let b = work(server);
        done(&b).then_some(b)
    })
}

/// Runs a `weir` client command against `server`: (exit code, stdout, stderr).
fn cli(server: &Server, args: &[&str], dir: &Path) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--server", server.url.as_str()]);
    weir(&all, dir)
}

#[test]
fn a_parked_key_holds_its_messages_across_a_restart_until_unparked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let t0 = now_ms();
    publish(&server, "a", "a1", false);
    publish(&server, "a", "a2", true);
    publish(&server, "b", "b1", false);
    publish(&server, "a", "a3", false);
    publish(&server, "c", "c1", true);
    publish(&server, "b", "b2", false);
    let b = wait_work(&server, "a and c parked, b flowing", |b| {
        b["parked_keys"] == 2 && b["acked"] == 3
    });
    assert_eq!(
        sorted(payloads(&server, "orders.enriched")),
        ["A1", "B1", "B2"],
        "a3 waits behind the parked a2"
    );
    assert_eq!(
        b["invocations"],
        3 + 2 + 2,
        "two attempts of each poison message"
    );
    assert_eq!(b["dead_lettered"], 0);
    assert_eq!(parked_keys(&b), ["a", "c"]);
    let a = b["parked"][0].clone();
    assert_eq!(
        (&a["offset"], &a["attempts"]),
        (&Value::from(1), &Value::from(2))
    );
    let reason = a["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("attempt 2: handler-error: enrich could not forward"),
        "{a}"
    );
    let since = a["since_ms"].as_u64().unwrap();
    assert!(t0 <= since && since <= now_ms(), "{a}");
    let rfc3339 = a["since"].as_str().unwrap();
    assert!(
        rfc3339.len() == 24 && rfc3339.ends_with('Z') && rfc3339.as_bytes()[10] == b'T',
        "{a}"
    );
    assert_eq!(b["parked"][1]["offset"], 4, "{b}");

    // Later messages of a parked key wait; other keys go on.
    publish(&server, "a", "a4", false);
    publish(&server, "b", "b3", false);
    wait_work(&server, "b3 handled", |b| b["acked"] == 4);
    assert_eq!(
        sorted(payloads(&server, "orders.enriched")),
        ["A1", "B1", "B2", "B3"]
    );
    let (code, tables, err) = cli(&server, &["stats"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(tables.contains("PARKED"), "{tables}");
    assert!(
        tables
            .lines()
            .any(|l| l.starts_with("work ") && l.contains(" a ") && l.contains(rfc3339)),
        "{tables}"
    );

    // Parked across a restart: the parked messages do not run again, nothing of a or c runs.
    server.stop();
    let server = Server::start_existing(dir.path());
    let b = work(&server);
    assert_eq!(
        b["parked"][0], a,
        "the same parked key, same reason and since"
    );
    publish(&server, "b", "b4", false);
    let b = wait_work(&server, "b4 handled after the restart", |b| b["acked"] == 1);
    assert_eq!(b["invocations"], 1, "only b4 ran: {b}");
    assert_eq!(b["parked_keys"], 2);
    assert_eq!(
        sorted(payloads(&server, "orders.enriched")),
        ["A1", "B1", "B2", "B3", "B4"]
    );

    // Unparking everything (CLI) before the cause is fixed: each parked message is tried again
    // from its first attempt, fails both attempts again and parks its key again.
    let t1 = now_ms();
    let (code, out, err) = cli(
        &server,
        &["binding", "unpark", "work", "--json"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["binding"], "work");
    let released: Vec<&str> = answer["released"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(released, ["a", "c"], "{answer}");
    assert_eq!(answer["released"][0]["offset"], 1);
    let b = wait_work(&server, "a and c retried and parked again", |b| {
        b["invocations"] == 1 + 2 + 2
            && b["parked"].as_array().is_some_and(|p| {
                p.len() == 2
                    && p.iter()
                        .all(|k| k["since_ms"].as_u64().is_some_and(|s| s >= t1))
            })
    });
    assert!(
        b["parked"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("attempt 2: handler-error"),
        "attempts counted from 1 again, not interrupted: {b}"
    );

    // The cause fixed (a version that forwards everything to `out`), a is unparked over HTTP:
    // a2, then a3 and a4, in order; c stays parked.
    let tagger = plugin("tagger");
    let (code, _, err) = cli(
        &server,
        &["plugin", "deploy", "p", tagger.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let (status, answer) = server.post("/v1/bindings/work/unpark?key=a", b"", &[]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["released"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["released"][0]["key"], "a");
    let b = wait_work(&server, "a's messages handled", |b| b["acked"] == 1 + 3);
    let out: Vec<String> = payloads(&server, "out")
        .iter()
        .map(|p| p.split_once('|').unwrap().1.to_owned())
        .collect();
    assert_eq!(
        out,
        ["a2", "a3", "a4"],
        "the parked message first, then in order"
    );
    assert_eq!(parked_keys(&b), ["c"]);

    // Without a key, every parked key (c) is released.
    let (status, answer) = server.post("/v1/bindings/work/unpark", b"", &[]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["released"][0]["key"], "c", "{answer}");
    let b = wait_work(&server, "c1 handled", |b| b["acked"] == 1 + 3 + 1);
    assert!(b.get("parked").is_none(), "nothing parked: {b}");
    assert_eq!(b["parked_keys"], 0);
    assert_eq!(payloads(&server, "out").len(), 4);

    // Nothing is parked after a restart either.
    server.stop();
    let server = Server::start_existing(dir.path());
    assert!(work(&server).get("parked").is_none());
    publish(&server, "a", "a5", false);
    publish(&server, "c", "c2", false);
    let b = wait_work(&server, "a5 and c2 handled", |b| b["acked"] == 2);
    assert_eq!(b["parked_keys"], 0);
}

#[test]
fn unpark_errors_name_the_binding_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let (status, body) = server.post("/v1/bindings/nope/unpark", b"", &[]);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_binding");
    let (status, body) = server.post("/v1/bindings/work/unpark?key=zzz", b"", &[]);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "key_not_parked");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key `zzz` of binding `work` is not parked"),
        "{body}"
    );
    let (status, body) = server.post("/v1/bindings/work/unpark?color=red", b"", &[]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query");
    let (status, body) = server.post("/v1/bindings/work/unpark", b"", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"], Value::Array(Vec::new()));

    let (code, _, err) = cli(&server, &["binding", "unpark", "nope"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("no binding named `nope` (unknown_binding, HTTP 404)"),
        "{err}"
    );
    let (code, _, err) = cli(&server, &["binding", "unpark", "work", "zzz"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("(key_not_parked, HTTP 409)"), "{err}");
    let (code, out, err) = cli(&server, &["binding", "unpark", "work"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no parked keys of `work`"), "{out}");

    let (_, doc) = server.get("/v1/openapi.json");
    assert!(
        doc["paths"]["/v1/bindings/{name}/unpark"]["post"].is_object(),
        "documented"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
