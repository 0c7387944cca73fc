// The order Decider, shared by `order-aggregate` and its test variants, which include it
// with their own constants (see each crate's `lib.rs`).

mod bindings {
    //! Bindings for world `weir:plugin/aggregate`.
    #![allow(missing_docs, unsafe_code, unused_qualifications, clippy::all)]

    wit_bindgen::generate!({
        path: "../../wit",
        world: "weir:plugin/aggregate",
        generate_all,
    });
}

use bindings::exports::weir::plugin::decider::{
    AggregateInfo, Command, Decision, Guest, NewEvent, RecordedEvent, Rejection,
};
use serde_json::{Value, json};

struct Order;

#[derive(Default)]
struct State {
    status: String,
    total: u64,
    paid: u64,
    events: u64,
}

impl State {
    fn decode(bytes: &[u8]) -> Result<State, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("bad state: {e}"))?;
        Ok(State {
            status: v["status"].as_str().unwrap_or("new").to_owned(),
            total: v["total"].as_u64().unwrap_or(0),
            paid: v["paid"].as_u64().unwrap_or(0),
            events: v["events"].as_u64().unwrap_or(0),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = json!({"status": self.status, "total": self.total, "paid": self.paid, "events": self.events});
        if let Some(tag) = STATE_TAG {
            v["v"] = json!(tag);
        }
        v.to_string().into_bytes()
    }
}

fn event(event_type: &str, payload: Value) -> NewEvent {
    NewEvent {
        event_type: event_type.to_owned(),
        schema_version: 1,
        headers: Vec::new(),
        payload: payload.to_string().into_bytes(),
    }
}

fn number(payload: &Value, field: &str) -> Result<u64, Rejection> {
    payload[field]
        .as_u64()
        .ok_or_else(|| Rejection::Invalid(format!("`{field}` must be a non-negative integer")))
}

impl Guest for Order {
    fn describe() -> AggregateInfo {
        AggregateInfo {
            state_version: STATE_VERSION,
        }
    }

    fn initial_state() -> Vec<u8> {
        State {
            status: "new".to_owned(),
            ..State::default()
        }
        .encode()
    }

    fn evolve(state: Vec<u8>, events: Vec<RecordedEvent>) -> Result<Vec<u8>, String> {
        let mut s = State::decode(&state)?;
        for e in events {
            let payload: Value = serde_json::from_slice(&e.payload).unwrap_or(Value::Null);
            match e.event_type.as_str() {
                "OrderPlaced" => {
                    s.status = "placed".to_owned();
                    s.total = payload["total"].as_u64().unwrap_or(0);
                }
                "OrderPaid" => s.paid += PAID_FACTOR * payload["amount"].as_u64().unwrap_or(0),
                "OrderSettled" => s.status = "settled".to_owned(),
                "OrderShipped" => s.status = "shipped".to_owned(),
                "OrderCancelled" => s.status = "cancelled".to_owned(),
                // Events of types this version does not know leave the state as it is.
                _ => {}
            }
            s.events += 1;
        }
        Ok(s.encode())
    }

    fn decide(command: Command, state: Vec<u8>) -> Result<Decision, Rejection> {
        let s = State::decode(&state).map_err(Rejection::Invalid)?;
        let payload: Value = if command.payload.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&command.payload)
                .map_err(|e| Rejection::Invalid(format!("the payload is not JSON: {e}")))?
        };
        let refuse = |why: &str| Err(Rejection::Refused(why.to_owned()));
        let events = match command.command_type.as_str() {
            "Place" => {
                if s.status != "new" {
                    return refuse("the order is already placed");
                }
                vec![event(
                    "OrderPlaced",
                    json!({"total": number(&payload, "total")?}),
                )]
            }
            "Pay" => {
                if s.status != "placed" {
                    return refuse("only a placed, unsettled order can be paid");
                }
                let amount = number(&payload, "amount")?;
                if s.paid + amount > s.total {
                    return refuse("the payment exceeds what is owed");
                }
                let mut events = vec![event("OrderPaid", json!({"amount": amount}))];
                if s.paid + amount == s.total {
                    events.push(event("OrderSettled", json!({})));
                }
                events
            }
            "Ship" => {
                if s.status != "settled" {
                    return refuse("only a settled order can be shipped");
                }
                vec![event("OrderShipped", json!({}))]
            }
            "Cancel" => {
                if s.status == "shipped" || s.status == "cancelled" {
                    return refuse("the order is already shipped or cancelled");
                }
                vec![event("OrderCancelled", json!({}))]
            }
            "Trap" => panic!("command `Trap` traps, as asked"),
            "Spin" => loop {
                std::hint::black_box(command.seed);
            },
            other => return Err(Rejection::Invalid(format!("unknown command `{other}`"))),
        };
        let reply = json!({"status": s.status, "events": events.len()});
        Ok(Decision {
            events,
            reply: Some(reply.to_string().into_bytes()),
        })
    }

    fn is_terminal(state: Vec<u8>) -> bool {
        State::decode(&state).is_ok_and(|s| s.status == "shipped" || s.status == "cancelled")
    }
}

bindings::export!(Order with_types_in bindings);
