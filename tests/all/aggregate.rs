//! Aggregates (world `weir:plugin/aggregate`) through the library API: the Decider's four
//! functions against the `order-aggregate` example, failures that leave nothing behind, and
//! the imports an aggregate may not have.

use std::sync::Arc;
use std::time::Duration;

use weir::config::Limits;
use weir::es::{RecordedEvent, StreamName};
use weir::host::{
    Aggregate, AggregateSpec, Command, FailureClass, Host, HostOptions, LoadError, Rejection,
};
use weir::names::{Offset, PluginName};
use weir::storage::{MemoryStorage, Storage};

use serde_json::{Value, json};

use crate::support::{Server, plugin};

fn load(name: &str, limits: Limits) -> Result<Aggregate, LoadError> {
    let host = Host::new(HostOptions::default().max_instances(8)).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    host.load_aggregate(
        AggregateSpec {
            name: PluginName::new("orders").unwrap(),
            path: plugin(name),
            limits,
        },
        storage,
    )
}

fn command(command_type: &str, payload: &str) -> Command {
    Command {
        command_id: format!("c-{command_type}"),
        command_type: command_type.to_owned(),
        payload: payload.as_bytes().to_vec(),
        headers: Vec::new(),
        received_at_ms: 1,
        seed: 7,
    }
}

/// Turns decided events into recorded ones of stream `order-1`, from `revision`.
fn recorded(decided: &[weir::host::DecidedEvent], revision: u64) -> Vec<RecordedEvent> {
    decided
        .iter()
        .enumerate()
        .map(|(i, e)| RecordedEvent {
            stream: StreamName::new("order-1").unwrap(),
            revision: revision + i as u64,
            position: Offset(revision + i as u64),
            event_id: format!("e{}", revision + i as u64),
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            headers: e.headers.clone(),
            payload: e.payload.clone(),
            timestamp_ms: 1,
            correlation_id: None,
            causation_id: None,
        })
        .collect()
}

fn status(state: &[u8]) -> String {
    let v: Value = serde_json::from_slice(state).unwrap();
    v["status"].as_str().unwrap().to_owned()
}

#[test]
fn an_order_is_decided_and_folded_through_its_lifecycle() {
    let agg = load("order-aggregate", Limits::default()).unwrap();
    assert_eq!(agg.state_version(), 1);
    assert_eq!(agg.hash().len(), 64);
    let mut state = agg.initial_state().unwrap();
    assert_eq!(status(&state), "new");
    let mut revision = 0;
    for (cmd, payload, events, after) in [
        ("Place", r#"{"total": 10}"#, 1, "placed"),
        ("Pay", r#"{"amount": 4}"#, 1, "placed"),
        ("Pay", r#"{"amount": 6}"#, 2, "settled"),
        ("Ship", "", 1, "shipped"),
    ] {
        let decision = agg
            .decide(&command(cmd, payload), state.clone())
            .unwrap()
            .unwrap_or_else(|r| panic!("{cmd} rejected: {r:?}"));
        assert_eq!(decision.events.len(), events, "{cmd}");
        let recorded = recorded(&decision.events, revision);
        revision += recorded.len() as u64;
        state = agg.evolve(state, &recorded).unwrap();
        assert_eq!(status(&state), after, "{cmd}");
    }
    assert!(agg.is_terminal(state.clone()).unwrap());
    // A shipped order refuses a cancel; nothing else changes.
    match agg.decide(&command("Cancel", ""), state.clone()).unwrap() {
        Err(Rejection::Refused(why)) => assert!(why.contains("shipped"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match agg.decide(&command("Fly", ""), state).unwrap() {
        Err(Rejection::Invalid(why)) => assert!(why.contains("unknown command"), "{why}"),
        other => panic!("expected an invalid command, got {other:?}"),
    }
}

#[test]
fn a_trap_or_a_loop_fails_that_call_only() {
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let agg = load("order-aggregate", limits).unwrap();
    let state = agg.initial_state().unwrap();
    let trap = agg.decide(&command("Trap", ""), state.clone()).unwrap_err();
    assert_eq!(trap.class, FailureClass::Trap, "{trap}");
    let spin = agg.decide(&command("Spin", ""), state.clone()).unwrap_err();
    assert_eq!(spin.class, FailureClass::Timeout, "{spin}");
    // The aggregate goes on serving.
    let ok = agg
        .decide(&command("Place", r#"{"total": 1}"#), state)
        .unwrap();
    assert!(ok.is_ok());
}

#[test]
fn a_handler_is_not_an_aggregate() {
    let err = load("noop", Limits::default()).unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    assert!(err.to_string().contains("not an aggregate"), "{err}");
    // A handler that imports key-value is refused for its imports first.
    let err = load("counter", Limits::default()).unwrap_err();
    assert!(matches!(err, LoadError::ForbiddenImport { .. }), "{err}");
}

// --- Through the real binary: commands over HTTP. ---

fn config(extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_message_size = \"4KiB\"\n[streams.shop]\n\
         [aggregates.order]\npath = {:?}\nstore = \"shop\"\ntimeout_ms = 300\n{extra}\n",
        plugin("order-aggregate").display().to_string()
    )
}

fn send(s: &Server, id: &str, body: Value) -> (u16, Value) {
    s.post(
        &format!("/v1/aggregates/order/{id}/commands"),
        body.to_string().as_bytes(),
        &[("content-type", "application/json")],
    )
}

fn stream_len(s: &Server, stream: &str) -> Option<u64> {
    let (status, page) = s.get(&format!("/v1/streams/shop/streams/{stream}?limit=1000"));
    (status == 200).then(|| page["events"].as_array().unwrap().len() as u64)
}

#[test]
fn commands_decide_append_and_answer_with_the_new_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let (status, body) = send(
        &s,
        "1",
        json!({"type": "Place", "command_id": "c1", "data": {"total": 10}}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stream"], "order-1");
    assert_eq!(body["revision"], 0);
    assert_eq!(body["reply"]["status"], "new");
    // Paying the rest settles: two events in one append.
    let (status, body) = send(
        &s,
        "1",
        json!({"type": "Pay", "command_id": "c2", "data": {"amount": 10}}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["appended"], json!([1, 2]));
    // The events carry ids from the command and the command as their cause.
    let (_, page) = s.get("/v1/streams/shop/streams/order-1");
    let events = page["events"].as_array().unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["c1.0", "c2.0", "c2.1"]);
    assert_eq!(events[2]["type"], "OrderSettled");
    assert_eq!(events[1]["causation_id"], "c2");
    // A retried command (same id) is answered from what it stored: nothing twice.
    let (status, body) = send(
        &s,
        "1",
        json!({"type": "Pay", "command_id": "c2", "data": {"amount": 10}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], true);
    assert_eq!(body["appended"], json!([1, 2]));
    assert_eq!(stream_len(&s, "order-1"), Some(3));
    // A business rule refuses: 422, nothing appended.
    let (status, body) = send(&s, "1", json!({"type": "Place", "data": {"total": 5}}));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "command_rejected");
    assert_eq!(stream_len(&s, "order-1"), Some(3));
    // The state reads back, folded.
    let (status, state) = s.get("/v1/aggregates/order/1");
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["revision"], 2);
    assert_eq!(state["state"]["status"], "settled");
    assert_eq!(state["state"]["events"], 3);
    // Shipping makes it terminal: every later command is refused.
    assert_eq!(send(&s, "1", json!({"type": "Ship"})).0, 201);
    let (status, body) = send(&s, "1", json!({"type": "Cancel"}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "aggregate_terminal");
}

#[test]
fn bad_commands_and_failing_aggregates_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    assert_eq!(
        send(&s, "2", json!({"type": "Place", "data": {"total": 3}})).0,
        201
    );
    let cases = [
        (
            "nope",
            "/v1/aggregates/nope/2/commands",
            json!({"type": "Place"}),
            404,
            "unknown_aggregate",
        ),
        (
            "bad id",
            "/v1/aggregates/order/a%20b/commands",
            json!({"type": "Place"}),
            400,
            "invalid_name",
        ),
        (
            "unknown command",
            "/v1/aggregates/order/2/commands",
            json!({"type": "Fly"}),
            400,
            "invalid_command",
        ),
        (
            "bad payload",
            "/v1/aggregates/order/2/commands",
            json!({"type": "Pay", "payload": "{"}),
            400,
            "invalid_command",
        ),
        (
            "trap",
            "/v1/aggregates/order/2/commands",
            json!({"type": "Trap"}),
            500,
            "aggregate_failed",
        ),
        (
            "loop",
            "/v1/aggregates/order/2/commands",
            json!({"type": "Spin"}),
            500,
            "aggregate_failed",
        ),
        (
            "oversized",
            "/v1/aggregates/order/2/commands",
            json!({"type": "Pay", "payload": "x".repeat(5000)}),
            413,
            "payload_too_large",
        ),
        (
            "not json",
            "/v1/aggregates/order/2/commands",
            json!("Place"),
            400,
            "invalid_json",
        ),
    ];
    for (what, path, body, want, code) in cases {
        let (status, answer) = s.post(
            path,
            body.to_string().as_bytes(),
            &[("content-type", "application/json")],
        );
        assert_eq!(status, want, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
    }
    assert_eq!(stream_len(&s, "order-2"), Some(1));
    // The aggregate goes on serving.
    let (status, body) = send(&s, "2", json!({"type": "Pay", "data": {"amount": 3}}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(stream_len(&s, "order-2"), Some(3));
}

#[test]
fn racing_commands_to_one_instance_each_apply_once_against_a_fresh_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config("conflict_retries = 100"));
    assert_eq!(
        send(&s, "7", json!({"type": "Place", "data": {"total": 1000}})).0,
        201
    );
    let url = s.url.clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let body = json!({"type": "Pay", "command_id": format!("p{t}-{i}"), "data": {"amount": 1}});
                    let (status, answer) = crate::support::call_json(
                        "POST",
                        &format!("{url}/v1/aggregates/order/7/commands"),
                        &[("content-type", "application/json")],
                        body.to_string().as_bytes(),
                    );
                    assert_eq!(status, 201, "{answer}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // 80 payments of 1, each counted once: a command never went through on a stale state.
    let (_, state) = s.get("/v1/aggregates/order/7");
    assert_eq!(state["state"]["paid"], 80, "{state}");
    assert_eq!(state["revision"], 80);
}

#[test]
fn snapshots_are_used_and_ignored_when_the_component_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config("snapshot_every = 5"));
    assert_eq!(
        send(&s, "9", json!({"type": "Place", "data": {"total": 100}})).0,
        201
    );
    for _ in 0..12 {
        assert_eq!(
            send(&s, "9", json!({"type": "Pay", "data": {"amount": 1}})).0,
            201
        );
    }
    let (_, state) = s.get("/v1/aggregates/order/9");
    assert!(
        state["stats"]["snapshots_written"].as_u64().unwrap() >= 2,
        "{state}"
    );
    s.stop();
    // A restart has no cached states: the state comes from the snapshot plus what follows.
    let s = Server::start_existing(dir.path());
    let (_, state) = s.get("/v1/aggregates/order/9");
    assert_eq!(state["state"]["paid"], 12, "{state}");
    assert_eq!(state["state"]["events"], 13, "{state}");
    assert_eq!(state["stats"]["snapshot_loads"], 1, "{state}");
    assert!(
        state["stats"]["events_folded"].as_u64().unwrap() < 13,
        "{state}"
    );
    s.stop();
    // Another component (here: the same Decider rebuilt into a different file) has another
    // hash, so the snapshot is ignored and the state folded from every event.
    let mut bytes = std::fs::read(plugin("order-aggregate")).unwrap();
    // A custom section changes the hash and nothing else.
    bytes.extend_from_slice(&[0, 6, 1, b'x', 1, 2, 3, 4]);
    let other = dir.path().join("order-v2.wasm");
    std::fs::write(&other, bytes).unwrap();
    let toml = std::fs::read_to_string(dir.path().join("weir.toml")).unwrap();
    let toml = toml.replace(
        &format!("{:?}", plugin("order-aggregate").display().to_string()),
        &format!("{:?}", other.display().to_string()),
    );
    let s = Server::start(dir.path(), &toml);
    let (_, state) = s.get("/v1/aggregates/order/9");
    assert_eq!(state["state"]["events"], 13, "{state}");
    assert_eq!(state["stats"]["snapshot_loads"], 0, "{state}");
    assert_eq!(state["stats"]["snapshots_ignored"], 1, "{state}");
    assert_eq!(state["stats"]["events_folded"], 13, "{state}");
}

fn deploy(s: &Server, name: &str) -> (u16, Value) {
    let bytes = std::fs::read(plugin(name)).unwrap();
    s.post(
        "/v1/aggregates/order/versions",
        &bytes,
        &[("content-type", "application/wasm")],
    )
}

#[test]
fn a_deploy_is_verified_against_the_running_evolve() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config("snapshot_every = 2"));
    for id in ["1", "2"] {
        assert_eq!(
            send(&s, id, json!({"type": "Place", "data": {"total": 10}})).0,
            201
        );
        assert_eq!(
            send(&s, id, json!({"type": "Pay", "data": {"amount": 3}})).0,
            201
        );
        assert_eq!(
            send(&s, id, json!({"type": "Pay", "data": {"amount": 3}})).0,
            201
        );
    }
    // Same component again: nothing to do.
    let (status, body) = deploy(&s, "order-aggregate");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["swapped"], false);
    // A version whose evolve counts payments twice, same state version: refused, naming the
    // first stream and revision where the states part.
    let (status, body) = deploy(&s, "order-aggregate-drift");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "evolve_disagrees", "{body}");
    assert_eq!(body["error"]["stream"], "order-1");
    assert_eq!(body["error"]["revision"], 1);
    // The running version is untouched and goes on serving.
    let (_, state) = s.get("/v1/aggregates/order/1");
    assert_eq!(state["state"]["paid"], 6, "{state}");
    assert_eq!(
        send(&s, "1", json!({"type": "Pay", "data": {"amount": 1}})).0,
        201
    );
    // Not a component, or not an aggregate: refused too.
    let (status, body) = s.post("/v1/aggregates/order/versions", b"nope", &[]);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_component")),
        "{body}"
    );
    let (status, _) = deploy(&s, "noop");
    assert_eq!(status, 400);
    // A new state encoding with a higher state version: allowed; the states are rebuilt from
    // the events (the old snapshots are another version's).
    let (status, body) = deploy(&s, "order-aggregate-v2");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["state_version"], 2);
    assert_eq!(body["streams_checked"], 2);
    assert_eq!(body["streams_differing"], 2);
    let (_, state) = s.get("/v1/aggregates/order/1");
    assert_eq!(state["state"]["v"], 2, "{state}");
    assert_eq!(state["state"]["paid"], 7, "{state}");
    assert_eq!(state["stats"]["snapshot_loads"], 0, "{state}");
    // Going back to a lower state version is refused.
    let (status, body) = deploy(&s, "order-aggregate");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "state_version_lowered");
    // The deployed version survives a restart.
    s.stop();
    let s = Server::start_existing(dir.path());
    let (_, state) = s.get("/v1/aggregates/order/2");
    assert_eq!(state["state"]["v"], 2, "{state}");
    assert_eq!(state["state"]["paid"], 6, "{state}");
}

#[test]
fn the_cli_sends_commands_reads_states_and_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let server = ["--server", s.url.as_str()];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&server);
        crate::support::weir(&all, dir.path())
    };
    let (code, out, err) = run(&[
        "aggregate",
        "command",
        "order",
        "5",
        "-t",
        "Place",
        r#"{"total": 4}"#,
        "--command-id",
        "k1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("appended to order-5 revisions 0..=0"), "{out}");
    let (code, out, _) = run(&[
        "aggregate",
        "command",
        "order",
        "5",
        "-t",
        "Place",
        r#"{"total": 4}"#,
        "--command-id",
        "k1",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("already handled"), "{out}");
    let (code, _, err) = run(&[
        "aggregate",
        "command",
        "order",
        "5",
        "-t",
        "Place",
        r#"{"total": 4}"#,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("command_rejected"), "{err}");
    let (code, out, _) = run(&["aggregate", "state", "order", "5"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("order-5 at revision 0: "), "{out}");
    assert!(out.contains(r#""status":"placed""#), "{out}");
    let drift = plugin("order-aggregate-drift").display().to_string();
    let (code, _, err) = run(&["aggregate", "deploy", "order", &drift]);
    assert_eq!(
        code, 0,
        "a placed order pays nothing, so the fold agrees: {err}"
    );
    let v2 = plugin("order-aggregate-v2").display().to_string();
    let (code, out, err) = run(&["aggregate", "deploy", "order", &v2]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(state version 2)"), "{out}");
}

#[test]
fn the_python_aggregate_folds_as_the_rust_one_and_replaces_it_verified() {
    let python = crate::support::orders_plugin("order-aggregate-py");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    for id in ["1", "2", "3"] {
        assert_eq!(
            send(&s, id, json!({"type": "Place", "data": {"total": 5}})).0,
            201
        );
        assert_eq!(
            send(&s, id, json!({"type": "Pay", "data": {"amount": 5}})).0,
            201
        );
    }
    assert_eq!(send(&s, "3", json!({"type": "Ship"})).0, 201);
    let (_, rust_state) = s.get("/v1/aggregates/order/3");
    // Same states, event by event, in another language: the verified deploy agrees.
    let bytes = std::fs::read(&python).unwrap();
    let (status, body) = s.post(
        "/v1/aggregates/order/versions",
        &bytes,
        &[("content-type", "application/wasm")],
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["streams_checked"], 3, "{body}");
    assert_eq!(body["events_checked"], 10, "{body}");
    assert_eq!(body["streams_differing"], 0, "{body}");
    let (_, py_state) = s.get("/v1/aggregates/order/3");
    assert_eq!(py_state["state"], rust_state["state"]);
    // Python decides now: the lifecycle goes on, rules and failures as before.
    let (status, body) = send(&s, "4", json!({"type": "Place", "data": {"total": 2}}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["reply"], json!({"events": 1, "status": "new"}));
    let (status, body) = send(&s, "4", json!({"type": "Pay", "data": {"amount": 3}}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("command_rejected")),
        "{body}"
    );
    let (status, body) = send(&s, "4", json!({"type": "Trap"}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("aggregate_failed")),
        "{body}"
    );
    let (status, body) = send(&s, "3", json!({"type": "Cancel"}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("aggregate_terminal")),
        "{body}"
    );
    let (status, body) = send(&s, "4", json!({"type": "Pay", "data": {"amount": 2}}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["appended"], json!([1, 2]));
    assert_eq!(stream_len(&s, "order-4"), Some(3));
}
