// The projection, shared by `order-totals` and `order-totals-v2` (included by their lib.rs).

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
        if COUNT_TYPES {
            add(&format!("types/{}", event.event_type), 1)?;
        }
        add("events", 1)?;
        kv::set("position", event.position.to_string().as_bytes()).map_err(kv_failed)
    }
}

bindings::export!(OrderTotals with_types_in bindings);
