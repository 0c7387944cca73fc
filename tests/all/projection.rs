//! Projections (world `weir:plugin/projection`) through the real binary: the `order-totals`
//! example bound to a stream store that the `order-aggregate` example writes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, plugin, wait_for};

const BINDING: &str = "shop.order-totals";

fn config(totals: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[streams.shop]\n\
         [aggregates.order]\npath = {:?}\nstore = \"shop\"\n\
         [plugins.order-totals]\npath = {:?}\n\
         [[bindings]]\nsource = \"shop\"\nplugin = \"order-totals\"\nguarantee = \"exactly-once\"\n",
        plugin("order-aggregate").display().to_string(),
        totals,
    )
}

fn send(s: &Server, id: &str, body: Value) -> u16 {
    let (status, answer) = s.post(
        &format!("/v1/aggregates/order/{id}/commands"),
        body.to_string().as_bytes(),
        &[("content-type", "application/json")],
    );
    assert!(status == 201 || status == 200, "{status} {answer}");
    status
}

/// Waits until the projection has handled everything in the store.
fn caught_up(s: &Server) -> Value {
    wait_for(
        &format!("{BINDING} to catch up ({})", s.stderr()),
        Duration::from_secs(30),
        || {
            let b = s.stats()["bindings"][BINDING].clone();
            (b["lag"] == 0 && b["in_flight"] == 0).then_some(b)
        },
    )
}

/// The projection's key-value state, values as text.
fn totals(s: &Server) -> BTreeMap<String, String> {
    let (status, page) = s.get("/v1/plugins/order-totals/kv?limit=1000");
    assert_eq!(status, 200, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_projection_folds_the_store_once_in_commit_order_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let totals_path = plugin("order-totals").display().to_string();
    let s = Server::start(dir.path(), &config(&totals_path));
    // Three orders: one settled and shipped, one cancelled, one half paid.
    send(&s, "1", json!({"type": "Place", "data": {"total": 10}}));
    send(&s, "2", json!({"type": "Place", "data": {"total": 7}}));
    send(&s, "3", json!({"type": "Place", "data": {"total": 5}}));
    send(&s, "1", json!({"type": "Pay", "data": {"amount": 10}}));
    send(&s, "1", json!({"type": "Ship"}));
    send(&s, "2", json!({"type": "Cancel"}));
    send(&s, "3", json!({"type": "Pay", "data": {"amount": 2}}));
    // Events outside the orders' vocabulary are counted, not misread.
    let (status, body) = s.post(
        "/v1/streams/shop/streams/audit-1",
        br#"{"events": [{"type": "Note", "data": "x"}]}"#,
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 201, "{body}");
    let b = caught_up(&s);
    assert_eq!(b["cursor"], 9, "{b}");
    let want: BTreeMap<String, String> = [
        ("events", "9"),
        ("position", "8"),
        ("orders/placed", "3"),
        ("orders/settled", "1"),
        ("orders/shipped", "1"),
        ("orders/cancelled", "1"),
        ("amount/ordered", "22"),
        ("amount/paid", "12"),
        ("order/order-1", "shipped"),
        ("order/order-2", "cancelled"),
        ("order/order-3", "placed"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(totals(&s), want);
    // Across a restart, nothing is projected twice; new events continue the fold.
    s.stop();
    let s = Server::start_existing(dir.path());
    send(&s, "3", json!({"type": "Pay", "data": {"amount": 3}}));
    caught_up(&s);
    let have = totals(&s);
    assert_eq!(have["events"], "11");
    assert_eq!(have["amount/paid"], "15");
    assert_eq!(have["orders/settled"], "2");
    assert_eq!(have["order/order-3"], "settled");
}

#[test]
fn a_projection_bound_to_a_queue_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.work]\n\
         [plugins.order-totals]\npath = {:?}\n\
         [[bindings]]\nsource = \"work\"\nplugin = \"order-totals\"\n",
        plugin("order-totals").display().to_string(),
    );
    std::fs::write(dir.path().join("weir.toml"), cfg).unwrap();
    let out = std::process::Command::new(crate::support::weir_bin())
        .args(["run", "--config"])
        .arg(dir.path().join("weir.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is a projection") && stderr.contains("[streams.work]"),
        "{stderr}"
    );
}
