//! Projections (world `weir:plugin/projection`) through the real binary: the `order-totals`
//! example bound to a stream store that the `order-aggregate` example writes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, orders_plugin, plugin, wait_for};

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
    folds_once_across_restarts(&plugin("order-totals").display().to_string());
}

#[test]
fn the_python_projection_folds_the_store_like_the_rust_one() {
    folds_once_across_restarts(&orders_plugin("order-totals-py").display().to_string());
}

/// Drives three orders and a foreign event through the aggregate; `totals_path` must fold them
/// into the same read model, once, across a restart.
fn folds_once_across_restarts(totals_path: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(totals_path));
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

/// The projection's keys that are not per order (the per-order status keys run to thousands).
fn counters(s: &Server) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for prefix in ["amount/", "events", "orders/", "position", "types/"] {
        let (status, page) = s.get(&format!(
            "/v1/plugins/order-totals/kv?prefix={prefix}&limit=1000"
        ));
        assert_eq!(status, 200, "{page}");
        for e in page["entries"].as_array().unwrap() {
            out.insert(
                e["key"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            );
        }
    }
    out
}

fn rebuild_config(totals: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[streams.shop]\n\
         [plugins.order-totals]\npath = {totals:?}\n\
         [plugins.spare]\npath = {totals:?}\n\
         [[bindings]]\nsource = \"shop\"\nplugin = \"order-totals\"\nguarantee = \"exactly-once\"\n",
    )
}

fn append_many(url: &str, body: &Value) {
    let (status, answer) = crate::support::call_json(
        "POST",
        &format!("{url}/v1/streams/shop/append"),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn a_shadow_rebuild_is_swapped_in_under_load_with_nothing_lost_or_doubled() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

    let dir = tempfile::tempdir().unwrap();
    let v1 = plugin("order-totals").display().to_string();
    let s = Server::start(dir.path(), &rebuild_config(&v1));
    // History: 3,000 orders placed, in batches of 50 streams per append.
    const ORDERS: u64 = 3000;
    for batch in 0..ORDERS / 50 {
        let appends: Vec<Value> = (0..50)
            .map(|i| {
                json!({"stream": format!("order-{}", batch * 50 + i), "expected_revision": "no-stream",
                       "events": [{"type": "OrderPlaced", "data": {"total": 1}}]})
            })
            .collect();
        append_many(&s.url, &json!({ "appends": appends }));
    }
    // Load: payments appended one at a time, all through the rebuild and after it.
    let stop = Arc::new(AtomicBool::new(false));
    let paid = Arc::new(AtomicU64::new(0));
    let loader = {
        let (url, stop, paid) = (s.url.clone(), Arc::clone(&stop), Arc::clone(&paid));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Relaxed) {
                let (status, answer) = crate::support::call_json(
                    "POST",
                    &format!("{url}/v1/streams/shop/streams/order-{}", i % ORDERS),
                    &[("content-type", "application/json")],
                    br#"{"events": [{"type": "OrderPaid", "data": {"amount": 1}}]}"#,
                );
                assert_eq!(status, 201, "{answer}");
                paid.fetch_add(1, Relaxed);
                i += 1;
            }
        })
    };
    wait_for("payments to flow", Duration::from_secs(30), || {
        (paid.load(Relaxed) >= 20).then_some(())
    });
    let before = s.stats()["bindings"][BINDING]["cursor"].as_u64().unwrap();
    let v2 = plugin("order-totals-v2").display().to_string();
    let (code, out, err) = crate::support::weir(
        &[
            "plugin",
            "deploy",
            "order-totals",
            &v2,
            "--rebuild",
            "--json",
            "--server",
            &s.url,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}\n{}", s.stderr());
    let done: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(done["phase"], "done", "{done}");
    assert_eq!(done["version"], 2, "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    // The running version kept serving while the new one rebuilt.
    assert!(
        done["live_cursor"].as_u64().unwrap() > before,
        "{done} {before}"
    );
    // It handled exactly what the live binding had acknowledged when it stopped for the swap.
    assert_eq!(done["handled"], done["live_cursor"], "{done}");
    // The new version serves after the swap, under the same load.
    let swapped_at = done["live_cursor"].as_u64().unwrap();
    wait_for(
        "the new version to handle new events",
        Duration::from_secs(30),
        || {
            let c = s.stats()["bindings"][BINDING]["cursor"].as_u64().unwrap();
            (c >= swapped_at + 20).then_some(())
        },
    );
    stop.store(true, Relaxed);
    loader.join().unwrap();
    caught_up(&s);
    let paid = paid.load(Relaxed);
    let have = counters(&s);
    // Every event folded once, history by the rebuild and the rest live: the per-type counts
    // only the new version keeps cover all of them.
    let events = ORDERS + paid;
    assert_eq!(have["events"], events.to_string());
    assert_eq!(have["types/OrderPlaced"], ORDERS.to_string());
    assert_eq!(have["types/OrderPaid"], paid.to_string());
    assert_eq!(have["orders/placed"], ORDERS.to_string());
    assert_eq!(have["amount/ordered"], ORDERS.to_string());
    assert_eq!(have["amount/paid"], paid.to_string());
    assert_eq!(have["position"], (events - 1).to_string());
    assert_eq!(s.stats()["rebuilds"]["order-totals"]["phase"], "done");
    let (_, view) = s.get("/v1/plugins/order-totals");
    assert_eq!(view["active"], 2, "{view}");
    // The rebuilt version and its state stay across a restart; the shadow state is gone.
    s.stop();
    let s = Server::start_existing(dir.path());
    let (status, body) = s.post(
        "/v1/streams/shop/streams/order-0",
        br#"{"events": [{"type": "OrderPaid", "data": {"amount": 1}}]}"#,
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 201, "{body}");
    caught_up(&s);
    let have = counters(&s);
    assert_eq!(have["events"], (events + 1).to_string());
    assert_eq!(have["types/OrderPaid"], (paid + 1).to_string());
    let (_, view) = s.get("/v1/plugins/order-totals");
    assert_eq!(view["active"], 2, "{view}");
}

#[test]
fn a_rebuild_that_cannot_run_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = plugin("order-totals").display().to_string();
    let s = Server::start(dir.path(), &rebuild_config(&v1));
    let v2 = std::fs::read(plugin("order-totals-v2")).unwrap();
    let (status, body) = s.get("/v1/plugins/order-totals/rebuild");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_rebuild")),
        "{body}"
    );
    // A plugin with no binding has no source to rebuild from.
    let (status, body) = s.post("/v1/plugins/spare/versions?rebuild=true", &v2, &[]);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_rebuildable", "{body}");
    // Not a component: refused like any deploy.
    let (status, body) = s.post(
        "/v1/plugins/order-totals/versions?rebuild=true",
        b"nope",
        &[],
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_plugin", "{body}");
    let (status, body) = s.post("/v1/plugins/order-totals/versions?rebuild=yes", &v2, &[]);
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.post("/v1/plugins/nope/versions?rebuild=true", &v2, &[]);
    assert_eq!(status, 404, "{body}");
    let (_, view) = s.get("/v1/plugins/order-totals");
    assert_eq!(view["active"], 1, "{view}");
    assert_eq!(view["versions"].as_array().unwrap().len(), 1, "{view}");
    // The CLI says why, and fails.
    let (code, _, err) = crate::support::weir(
        &[
            "plugin",
            "deploy",
            "spare",
            &plugin("order-totals-v2").display().to_string(),
            "--rebuild",
            "--server",
            &s.url,
        ],
        dir.path(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("exactly one"), "{err}");
}

#[test]
fn a_rebuild_from_rust_to_python_keeps_the_read_model() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = plugin("order-totals").display().to_string();
    let s = Server::start(dir.path(), &rebuild_config(&v1));
    let appends: Vec<Value> = (0..40)
        .map(|i| {
            let mut events = vec![json!({"type": "OrderPlaced", "data": {"total": 3 + i}})];
            if i % 2 == 0 {
                events.push(json!({"type": "OrderPaid", "data": {"amount": 3 + i}}));
                events.push(json!({"type": "OrderSettled", "data": {}}));
            }
            if i % 5 == 0 {
                events.push(json!({"type": "OrderShipped", "data": {}}));
            } else if i % 7 == 0 {
                events.push(json!({"type": "OrderCancelled", "data": {}}));
            }
            json!({"stream": format!("order-{i}"), "expected_revision": "no-stream", "events": events})
        })
        .collect();
    append_many(&s.url, &json!({ "appends": appends }));
    caught_up(&s);
    let rust = totals(&s);
    assert_eq!(rust["orders/placed"], "40", "{rust:?}");
    let python = orders_plugin("order-totals-py").display().to_string();
    let (code, out, err) = crate::support::weir(
        &[
            "plugin",
            "deploy",
            "order-totals",
            &python,
            "--rebuild",
            "--json",
            "--server",
            &s.url,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}\n{}", s.stderr());
    let done: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (done["phase"].as_str(), done["failed"].as_u64()),
        (Some("done"), Some(0)),
        "{done}"
    );
    assert_eq!(totals(&s), rust);
    // The Python version serves what comes next.
    send_append(
        &s,
        "order-1",
        json!({"type": "OrderPaid", "data": {"amount": 4}}),
    );
    caught_up(&s);
    let python = totals(&s);
    assert_eq!(
        python["amount/paid"],
        (rust["amount/paid"].parse::<u64>().unwrap() + 4).to_string()
    );
    assert_eq!(
        python["events"],
        (rust["events"].parse::<u64>().unwrap() + 1).to_string()
    );
}

fn send_append(s: &Server, stream: &str, event: Value) {
    let (status, body) = s.post(
        &format!("/v1/streams/shop/streams/{stream}"),
        json!({ "events": [event] }).to_string().as_bytes(),
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 201, "{body}");
}
