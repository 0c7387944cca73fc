//! The transactional outbox through the real binary: a `weir run` child is SIGKILLed after an
//! exactly-once commit's journal record is durable and before its published records are
//! appended (the `WEIR_FAULT_OUTBOX_STALL` hook stops the outbox there); after a restart every
//! output of every acknowledged message exists exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{Server, plugin_toml, wait_for};

const BINDING: &str = "in.counter";

fn config() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.in]\n[queues.out]\n{}\
         [[bindings]]\nsource = \"in\"\nplugin = \"counter\"\nguarantee = \"exactly-once\"\n",
        plugin_toml("counter", "publish = [\"out\"]"),
    )
}

fn publish(s: &Server, n: u64) {
    s.publish(
        "in",
        &format!("input {n}"),
        &[
            ("weir-id", &format!("in-{n}")),
            ("weir-key", "k"),
            ("weir-header-forward-to", "out"),
            ("weir-header-forward-copies", "2"),
        ],
    );
}

/// The outputs in `out`: (payload, total, copy) → how many times each is stored.
fn outputs(s: &Server) -> BTreeMap<(String, u64, u64), u64> {
    let (status, page) = s.get("/v1/destinations/out/messages?from=0&limit=1000");
    assert_eq!(status, 200, "{page}");
    let mut out = BTreeMap::new();
    for m in page["messages"].as_array().unwrap() {
        let header = |name: &str| -> u64 {
            m["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0] == name)
                .and_then(|h| h[1].as_str()?.parse().ok())
                .unwrap_or_else(|| panic!("output without header `{name}`: {m}"))
        };
        let payload = m["payload"].as_str().unwrap().to_owned();
        *out.entry((payload, header("count"), header("copy")))
            .or_default() += 1;
    }
    out
}

#[test]
fn a_crash_after_the_journal_record_and_before_the_outbox_loses_and_doubles_no_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weir.toml"), config()).unwrap();
    // The third commit with publishes is journaled, then the outbox stops before appending.
    let s = Server::start_with_env(dir.path(), &[], &[("WEIR_FAULT_OUTBOX_STALL", "3")]);
    for n in 1..=3u64 {
        publish(&s, n);
        // One message per commit: wait for this one's commit (or for the stall).
        wait_for(
            &format!("message {n} to be committed ({})", s.stderr()),
            Duration::from_secs(30),
            || {
                let stalled = s.stderr().contains("weir: outbox stalled");
                let cursor = s.stats()["bindings"][BINDING]["cursor"]
                    .as_u64()
                    .unwrap_or(0);
                (cursor >= n || stalled).then_some(())
            },
        );
    }
    wait_for(
        &format!("the outbox to stall ({})", s.stderr()),
        Duration::from_secs(30),
        || s.stderr().contains("weir: outbox stalled").then_some(()),
    );
    // The third message is acknowledged in the journal; its two outputs are not in `out`.
    assert_eq!(outputs(&s).len(), 4, "{:?}", outputs(&s));
    s.signal("KILL");

    let s = Server::start_existing(dir.path());
    let b = s.stats()["bindings"][BINDING].clone();
    assert_eq!(b["cursor"], 3, "message 3 is not delivered again: {b}");
    publish(&s, 4);
    s.wait_binding(BINDING, "acked", 1);
    let want: BTreeMap<(String, u64, u64), u64> = (1..=4u64)
        .flat_map(|n| (0..2).map(move |copy| ((format!("input {n}"), n, copy), 1)))
        .collect();
    assert_eq!(
        outputs(&s),
        want,
        "every output of every acknowledged message, once"
    );
    let (_, kv) = s.get("/v1/plugins/counter/kv?prefix=count&limit=10");
    assert_eq!(kv["entries"].as_array().unwrap().len(), 2, "{kv}");
}
