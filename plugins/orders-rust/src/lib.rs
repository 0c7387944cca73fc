//! `orders-rust`: weir's example order handler, the one every language implements (the
//! behaviour is defined in `plugins/README.md`). Validates an order, counts the customer's
//! orders in kv `orders/<customer>` (decimal text), publishes the enriched order to
//! `orders.enriched`, and dead-letters what is not a valid order.

use serde_json::Value;
use weir_sdk::{HandlerError, Message, Outcome, Outgoing, kv};

/// Where enriched orders go.
const DESTINATION: &str = "orders.enriched";

struct Order {
    id: String,
    customer: String,
    amount: u64,
}

/// Letters, digits, `-` and `_`, 1 to 64 of them.
fn valid_name(value: Option<&Value>) -> Option<String> {
    let s = value?.as_str()?;
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| s.to_owned())
}

/// The order in `payload`, or why it is not one.
fn parse_order(payload: &[u8]) -> Result<Order, &'static str> {
    let doc: Value = serde_json::from_slice(payload).map_err(|_| "payload is not JSON")?;
    let Value::Object(fields) = doc else {
        return Err("payload is not a JSON object");
    };
    let id = valid_name(fields.get("order_id"))
        .ok_or("order_id must be 1 to 64 letters, digits, '-' or '_'")?;
    let customer = valid_name(fields.get("customer"))
        .ok_or("customer must be 1 to 64 letters, digits, '-' or '_'")?;
    // Numbers are kept as written (`arbitrary_precision`), so 1e400 is out of range rather
    // than not JSON, as in the other languages.
    let amount = fields
        .get("amount")
        .and_then(|v| v.as_number())
        .and_then(|n| n.as_str().parse::<f64>().ok())
        .filter(|a| (1.0..=100_000_000.0).contains(a) && a.fract() == 0.0)
        .ok_or("amount must be a whole number of cents from 1 to 100000000")?;
    Ok(Order {
        id,
        customer,
        amount: amount as u64,
    })
}

fn handle(msg: Message) -> Result<Outcome, HandlerError> {
    let order = match parse_order(&msg.payload) {
        Ok(order) => order,
        Err(reason) => return Ok(Outcome::DeadLetter(format!("invalid order: {reason}"))),
    };
    let key = format!("orders/{}", order.customer);
    let count = match kv::get(&key)? {
        None => 0,
        Some(stored) => std::str::from_utf8(&stored)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                HandlerError::fatal(format!("orders: kv value at {key} is not a decimal count"))
            })?,
    } + 1;
    kv::set(&key, count.to_string())?;
    let payload = format!(
        r#"{{"order_id":"{}","customer":"{}","amount":{},"amount_text":"{}.{:02}","customer_orders":{count}}}"#,
        order.id,
        order.customer,
        order.amount,
        order.amount / 100,
        order.amount % 100,
    );
    let out = Outgoing::new(payload)
        .with_key(order.customer)
        .with_header("content-type", "application/json");
    weir_sdk::publish(DESTINATION, out)?;
    Ok(Outcome::Ack)
}

weir_sdk::handler!(handle);
