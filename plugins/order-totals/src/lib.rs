//! `order-totals`: a read model of the `order-aggregate` example's events, in world
//! `weir:plugin/projection`. Bind it to the orders stream store; under exactly-once its
//! key-value writes commit with its checkpoint, so every event counts once.
//!
//! Key-value state, all values decimal text:
//! - `events`: events projected; `position`: the store position of the last one.
//! - `orders/placed`, `orders/settled`, `orders/shipped`, `orders/cancelled`: order counts.
//! - `amount/ordered`: the sum of `OrderPlaced.total`; `amount/paid`: of `OrderPaid.amount`.
//! - `order/<stream>`: the order's status (`placed`, `settled`, `shipped`, `cancelled`).
//!
//! An event type it does not know is counted in `events` and otherwise ignored, so a newer
//! aggregate can add events without stopping the projection. A known event whose payload is
//! not the JSON it expects fails that event (non-retryable: it goes to the dead-letter queue
//! with the reason instead of being counted wrong).

mod bindings {
    //! Bindings for world `weir:plugin/projection`.
    #![allow(missing_docs, unsafe_code, unused_qualifications, clippy::all)]

    wit_bindgen::generate!({
        path: "../../wit",
        world: "weir:plugin/projection",
        generate_all,
    });
}

use bindings::exports::weir::plugin::projector::{Guest, HandlerError, RecordedEvent};
use bindings::weir::plugin::kv;
use serde_json::Value;

struct OrderTotals;

fn kv_failed(e: kv::KvError) -> HandlerError {
    let (message, retryable) = match e {
        kv::KvError::Unavailable(m) => (m, true),
        kv::KvError::TooLarge(limit) => (format!("over the host's limit of {limit} bytes"), false),
    };
    HandlerError {
        message: format!("kv: {message}"),
        retryable,
    }
}

fn fatal(message: String) -> HandlerError {
    HandlerError {
        message,
        retryable: false,
    }
}

/// Reads the decimal counter at `key` (0 when absent).
fn read(key: &str) -> Result<u64, HandlerError> {
    match kv::get(key).map_err(kv_failed)? {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fatal(format!("kv key `{key}` does not hold a decimal number"))),
    }
}

fn add(key: &str, n: u64) -> Result<(), HandlerError> {
    let value = read(key)?
        .checked_add(n)
        .ok_or_else(|| fatal(format!("kv key `{key}` would overflow")))?;
    kv::set(key, value.to_string().as_bytes()).map_err(kv_failed)
}

fn status(stream: &str, status: &str) -> Result<(), HandlerError> {
    kv::set(&format!("order/{stream}"), status.as_bytes()).map_err(kv_failed)
}

/// The unsigned number at `field` of the event's JSON payload.
fn number(event: &RecordedEvent, field: &str) -> Result<u64, HandlerError> {
    let payload: Value = serde_json::from_slice(&event.payload).map_err(|e| {
        fatal(format!(
            "{} at {}@{}: payload is not JSON: {e}",
            event.event_type, event.stream_name, event.revision
        ))
    })?;
    payload[field].as_u64().ok_or_else(|| {
        fatal(format!(
            "{} at {}@{}: `{field}` is not an unsigned number",
            event.event_type, event.stream_name, event.revision
        ))
    })
}

impl Guest for OrderTotals {
    fn project(event: RecordedEvent) -> Result<(), HandlerError> {
        let stream = event.stream_name.as_str();
        match event.event_type.as_str() {
            "OrderPlaced" => {
                let total = number(&event, "total")?;
                add("orders/placed", 1)?;
                add("amount/ordered", total)?;
                status(stream, "placed")?;
            }
            "OrderPaid" => add("amount/paid", number(&event, "amount")?)?,
            "OrderSettled" => {
                add("orders/settled", 1)?;
                status(stream, "settled")?;
            }
            "OrderShipped" => {
                add("orders/shipped", 1)?;
                status(stream, "shipped")?;
            }
            "OrderCancelled" => {
                add("orders/cancelled", 1)?;
                status(stream, "cancelled")?;
            }
            _ => {}
        }
        add("events", 1)?;
        kv::set("position", event.position.to_string().as_bytes()).map_err(kv_failed)
    }
}

bindings::export!(OrderTotals with_types_in bindings);
