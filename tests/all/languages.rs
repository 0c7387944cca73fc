//! The orders example in every language (Rust, C, Python, JavaScript, Go, Zig), each built from
//! source by `build.rs`, runs the same messages through a real `weir run`; every language must
//! publish the same outputs, leave the same key-value state and dead-letter the same messages
//! for the same reasons (the fixture below), and load from the precompiled cache on restart.
//!
//! A language whose toolchain could not be installed or whose plugin did not build fails its
//! test with the build's reason: on CI every toolchain is installable, so a skip would hide a
//! broken build.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, orders_plugin, wait_for};

/// The message set: payloads published to `orders` in this order.
fn inputs() -> Vec<Vec<u8>> {
    let long_name = "a".repeat(65);
    [
        r#"{"order_id":"o-1","customer":"alice","amount":1250}"#,
        r#"{"order_id":"o-2","customer":"bob","amount":99}"#,
        "not json",
        "[1,2,3]",
        r#"{"customer":"alice","amount":100}"#,
        r#"{"order_id":"o-6","customer":"al ice","amount":100}"#,
        r#"{"order_id":"o-7","customer":"alice","amount":0}"#,
        r#"{"order_id":"o-8","customer":"alice","amount":-5}"#,
        r#"{"order_id":"o-9","customer":"alice","amount":12.5}"#,
        r#"{"order_id":"o-10","customer":"alice","amount":"12"}"#,
        r#"{"order_id":"o-11","customer":"alice","amount":true}"#,
        " {\"amount\": 1.5e2, \"customer\": \"c\\u0061rol\", \"order_id\": \"o-12\",\n \"note\": {\"nested\": [1, 2, {\"x\": null}]}} ",
        r#"{"order_id":"o-13","customer":"alice","amount":100000001}"#,
        r#"{"order_id":"o-14","customer":"alice","amount":100000000}"#,
        r#"{"order_id":"o-15","customer":"alice","amount":1e400}"#,
        r#"{"order_id":"o-16","customer":"Zoë","amount":5}"#,
        r#"{"order_id":"o-17","customer":"bob","amount":5,}"#,
        r#"{"order_id":"o-18","customer":"bob","customer":"dave","amount":7}"#,
        r#"{"order_id":"","customer":"bob","amount":5}"#,
        r#"{"order_id":"o-21","customer":"bob","amount":12.0}"#,
        r#"{"order_id":"o-22","customer":"bob","amount":NaN}"#,
        r#""just a string""#,
        &format!(r#"{{"order_id":"o-24","customer":"{long_name}","amount":5}}"#),
        r#"{"order_id":"o-25","customer":"bob","amount":12.0000000000000001}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    // Not UTF-8: not JSON.
    .chain([b"{\"order_id\":\"o-26\",\"customer\":\"b\xffb\",\"amount\":5}".to_vec()])
    .collect()
}

const NOT_JSON: &str = "invalid order: payload is not JSON";
const NOT_OBJECT: &str = "invalid order: payload is not a JSON object";
const BAD_ID: &str = "invalid order: order_id must be 1 to 64 letters, digits, '-' or '_'";
const BAD_CUSTOMER: &str = "invalid order: customer must be 1 to 64 letters, digits, '-' or '_'";
const BAD_AMOUNT: &str =
    "invalid order: amount must be a whole number of cents from 1 to 100000000";

/// The enriched orders on `orders.enriched`: (key, payload), in order.
fn expected_outputs() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "alice",
            r#"{"order_id":"o-1","customer":"alice","amount":1250,"amount_text":"12.50","customer_orders":1}"#,
        ),
        (
            "bob",
            r#"{"order_id":"o-2","customer":"bob","amount":99,"amount_text":"0.99","customer_orders":1}"#,
        ),
        (
            "carol",
            r#"{"order_id":"o-12","customer":"carol","amount":150,"amount_text":"1.50","customer_orders":1}"#,
        ),
        (
            "alice",
            r#"{"order_id":"o-14","customer":"alice","amount":100000000,"amount_text":"1000000.00","customer_orders":2}"#,
        ),
        (
            "dave",
            r#"{"order_id":"o-18","customer":"dave","amount":7,"amount_text":"0.07","customer_orders":1}"#,
        ),
        (
            "bob",
            r#"{"order_id":"o-21","customer":"bob","amount":12,"amount_text":"0.12","customer_orders":2}"#,
        ),
        (
            "bob",
            r#"{"order_id":"o-25","customer":"bob","amount":12,"amount_text":"0.12","customer_orders":3}"#,
        ),
    ]
}

/// The dead letters: (offset of the input, reason), in order.
fn expected_dead_letters() -> Vec<(u64, &'static str)> {
    vec![
        (2, NOT_JSON),
        (3, NOT_OBJECT),
        (4, BAD_ID),
        (5, BAD_CUSTOMER),
        (6, BAD_AMOUNT),
        (7, BAD_AMOUNT),
        (8, BAD_AMOUNT),
        (9, BAD_AMOUNT),
        (10, BAD_AMOUNT),
        (12, BAD_AMOUNT),
        (14, BAD_AMOUNT),
        (15, BAD_CUSTOMER),
        (16, NOT_JSON),
        (18, BAD_ID),
        (20, NOT_JSON),
        (21, NOT_OBJECT),
        (22, BAD_CUSTOMER),
        (24, NOT_JSON),
    ]
}

fn expected_kv() -> Value {
    json!([
        ["orders/alice", "2"],
        ["orders/bob", "3"],
        ["orders/carol", "1"],
        ["orders/dave", "1"],
    ])
}

/// A queue `orders` consumed in order by `plugin`, which may publish to `orders.enriched`,
/// with the memory limit `docs/languages.md` recommends for its language.
fn config(plugin: &str) -> String {
    let memory = if plugin == "orders-js" {
        "128MiB"
    } else {
        "64MiB"
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[queues.orders]\n[queues.\"orders.enriched\"]\n\n\
         [plugins.{plugin}]\npath = {:?}\npublish = [\"orders.enriched\"]\nmemory = \"{memory}\"\n\n\
         [[bindings]]\nname = \"orders\"\nsource = \"orders\"\nplugin = \"{plugin}\"\nordering = \"fifo\"\n",
        orders_plugin(plugin).display().to_string()
    )
}

/// Runs the message set through `plugin` and checks everything it left against the fixture;
/// then restarts the server and checks the plugin comes from the precompiled cache.
fn check_language(plugin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config(plugin));
    assert_eq!(
        server.stats()["plugins"][plugin]["loaded_from"],
        "compiled",
        "a fresh data directory has no precompiled cache"
    );
    let inputs = inputs();
    for payload in &inputs {
        let (status, body) = server.post("/v1/destinations/orders/messages", payload, &[]);
        assert_eq!(status, 201, "{body}");
    }
    let n = inputs.len() as u64;
    let what = format!("`{plugin}` to handle {n} orders");
    let stats = wait_for(&what, Duration::from_secs(60), || {
        let s = server.stats();
        let b = &s["bindings"]["orders"];
        let done = b["acked"].as_u64()? + b["dead_lettered"].as_u64()?;
        (done >= n).then_some(s)
    });
    let binding = &stats["bindings"]["orders"];
    assert_eq!(
        (
            &binding["acked"],
            &binding["dead_lettered"],
            &binding["retried"]
        ),
        (&json!(7), &json!(18), &json!(0)),
        "{plugin}: {binding}\nserver stderr:\n{}",
        server.stderr()
    );

    let (status, outputs) =
        server.get("/v1/destinations/orders.enriched/messages?from=0&limit=100");
    assert_eq!(status, 200, "{outputs}");
    let outputs: Vec<(String, String, Value)> = outputs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (text(&m["key"]), text(&m["payload"]), m["headers"].clone())
        })
        .collect();
    let expected: Vec<(String, String, Value)> = expected_outputs()
        .into_iter()
        .map(|(key, payload)| {
            let headers = json!([["content-type", "application/json"]]);
            (key.to_owned(), payload.to_owned(), headers)
        })
        .collect();
    assert_eq!(outputs, expected, "{plugin}: published outputs");

    let (status, kv) = server.get(&format!("/v1/plugins/{plugin}/kv?prefix="));
    assert_eq!(status, 200, "{kv}");
    let kv: Vec<Value> = kv["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["key"], e["value"]]))
        .collect();
    assert_eq!(Value::from(kv), expected_kv(), "{plugin}: key-value state");

    let (status, dlq) = server.get("/v1/bindings/orders/dlq?limit=100");
    assert_eq!(status, 200, "{dlq}");
    let dead: Vec<(u64, String, String)> = dlq["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["source_offset"].as_u64().unwrap(),
                d["class"].as_str().unwrap_or_default().to_owned(),
                d["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u64, String, String)> = expected_dead_letters()
        .into_iter()
        .map(|(offset, reason)| (offset, "dead-letter".to_owned(), reason.to_owned()))
        .collect();
    assert_eq!(dead, expected, "{plugin}: dead letters");

    // A restart loads the plugin from the precompiled cache, and its state goes on.
    assert_eq!(server.stop(), Some(0));
    let server = Server::start_existing(dir.path());
    let plugin_stats = &server.stats()["plugins"][plugin];
    assert_eq!(
        plugin_stats["loaded_from"], "cache",
        "{plugin}: {plugin_stats}"
    );
    server.publish(
        "orders",
        r#"{"order_id":"o-27","customer":"dave","amount":1}"#,
        &[],
    );
    server.wait_binding("orders", "acked", 1);
    let (_, kv) = server.get(&format!("/v1/plugins/{plugin}/kv?prefix=orders/dave"));
    assert_eq!(kv["entries"][0]["value"], "2", "{plugin}: {kv}");
}

#[test]
fn orders_in_rust() {
    check_language("orders-rust");
}

#[test]
fn orders_in_c() {
    check_language("orders-c");
}

#[test]
fn orders_in_python() {
    check_language("orders-py");
}

#[test]
fn orders_in_javascript() {
    check_language("orders-js");
}

#[test]
fn orders_in_go() {
    check_language("orders-go");
}

#[test]
fn orders_in_zig() {
    check_language("orders-zig");
}
