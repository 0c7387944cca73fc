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

use crate::support::plugin;

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
    let v: serde_json::Value = serde_json::from_slice(state).unwrap();
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
