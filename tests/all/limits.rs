//! What a publisher or a plugin sends is held to one set of limits, through the real binary:
//! reserved `weir-` headers are refused from outside and from plugins, and a plugin's
//! oversized key, headers, reply or error text fail only what they belong to, never the
//! binding (the `rogue` example misbehaves on demand).

use std::time::Duration;

use serde_json::Value;

use crate::support::{Server, plugin_toml, wait_for};

const BINDING: &str = "in.rogue";

fn config() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_message_size = \"64KiB\"\n\
         [queues.in]\n[queues.out]\n[topics.events]\n{}{}\
         [[bindings]]\nsource = \"in\"\nplugin = \"rogue\"\nguarantee = \"exactly-once\"\n\
         [[bindings]]\nsource = \"events\"\nplugin = \"counter\"\n\
         [[bindings]]\nsource = \"events\"\nplugin = \"rogue\"\n",
        plugin_toml("rogue", "publish = [\"out\"]"),
        plugin_toml("counter", ""),
    )
}

fn messages(s: &Server, dest: &str) -> Vec<Value> {
    let (status, page) = s.get(&format!(
        "/v1/destinations/{dest}/messages?from=0&limit=100"
    ));
    assert_eq!(status, 200, "{page}");
    page["messages"].as_array().unwrap().clone()
}

fn header<'a>(m: &'a Value, name: &str) -> Option<&'a str> {
    m["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[test]
fn reserved_headers_cannot_be_set_from_outside() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config());
    // Claiming to be a replay for another binding would make every other binding of the topic
    // acknowledge the message unrun; forged dead-letter headers would lie about its history.
    for name in ["weir-replay-for", "WEIR-dlq-reason", "weir-es-type"] {
        let (status, body) = s.post(
            "/v1/destinations/events/messages",
            b"spoofed",
            &[(&format!("weir-header-{name}"), "events.counter")],
        );
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_message", "{body}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains("reserved"), "{text}");
    }
    let (status, body) = s.post(
        "/v1/destinations/events/messages/batch",
        br#"{"messages": [{"payload": "ok"}, {"payload": "x", "headers": {"weir-replay-for": "events.counter"}}]}"#,
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 400, "{body}");
    assert!(messages(&s, "events").is_empty(), "nothing was stored");
    // An ordinary message reaches both bindings.
    s.publish("events", "fine", &[]);
    s.wait_binding("events.counter", "acked", 1);
    s.wait_binding("events.rogue", "acked", 1);
}

#[test]
fn a_plugin_is_held_to_the_limits_of_an_external_publish() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config());
    let modes = ["long-key", "many-headers", "reserved-header"];
    for (n, mode) in modes.iter().enumerate() {
        s.publish(
            "in",
            "payload",
            &[
                ("weir-id", &format!("m{n}")),
                ("weir-header-rogue", mode),
                ("weir-header-forward-to", "out"),
            ],
        );
    }
    s.wait_binding(BINDING, "acked", modes.len() as u64);
    // Each refusal reached the guest as a publish error, and the message was handled.
    let refused = |id: &str| -> String {
        let (status, kv) = s.get(&format!("/v1/plugins/rogue/kv?prefix=refused/{id}"));
        assert_eq!(status, 200, "{kv}");
        kv["entries"][0]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        refused("m0").contains("larger than 1024 bytes"),
        "{}",
        refused("m0")
    );
    assert!(
        refused("m1").contains("10000 headers; the limit is 64"),
        "{}",
        refused("m1")
    );
    assert!(refused("m2").contains("reserved"), "{}", refused("m2"));
    assert!(messages(&s, "out").is_empty(), "nothing refused was stored");

    // A reply over server.max_message_size fails that invocation only.
    let (status, body) = s.post(
        "/v1/destinations/in/requests?timeout_ms=3000",
        b"ask",
        &[
            ("weir-header-rogue", "big-reply"),
            ("weir-header-size", "70000"),
        ],
    );
    assert_ne!(status, 200, "{body}");
    // A 10 MiB error message is cut, and dead-letters its message.
    s.publish(
        "in",
        "fails",
        &[("weir-id", "huge"), ("weir-header-rogue", "huge-error")],
    );
    let dlq = wait_for(
        &format!("both failures to be dead-lettered ({})", s.stderr()),
        Duration::from_secs(30),
        || {
            let m = messages(&s, "in.rogue.dlq");
            (m.len() >= 2).then_some(m)
        },
    );
    let reason = |m: &Value| header(m, "weir-dlq-reason").unwrap_or_default().to_owned();
    let reply = dlq
        .iter()
        .find(|m| m["payload"] == "ask")
        .expect("the request");
    assert!(
        reason(reply).contains("the reply is 70000 bytes; the limit is 65536"),
        "{}",
        reason(reply)
    );
    let huge = dlq
        .iter()
        .find(|m| m["payload"] == "fails")
        .unwrap_or_else(|| panic!("the failing message in {dlq:?}"));
    let text = reason(huge);
    assert!(
        text.len() <= 4096 && text.ends_with("bytes cut)"),
        "{} bytes",
        text.len()
    );
    let history = header(huge, "weir-dlq-history").unwrap();
    assert!(
        history.len() < 16 << 10,
        "{} bytes of history",
        history.len()
    );

    // The binding is alive: the next message is forwarded.
    s.publish("in", "after", &[("weir-header-forward-to", "out")]);
    wait_for(
        "the next message to be forwarded",
        Duration::from_secs(30),
        || (messages(&s, "out").len() == 1).then_some(()),
    );
    assert_eq!(messages(&s, "out")[0]["payload"], "after");
}
