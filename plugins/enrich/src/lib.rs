//! `enrich`: publishes each payload upper-cased (ASCII) to the destination in header
//! `forward-to` (default `orders.enriched`), keeping the key and adding `enriched-by: enrich`.
//! With header `reply-by-publish` on a request, it publishes to the request's reply-to instead,
//! which answers the request without a `reply` outcome.

use weir_sdk::{HandlerError, Message, Outcome, Outgoing};

/// Where enriched messages go when the message has no `forward-to` header.
const DEFAULT_DESTINATION: &str = "orders.enriched";

fn handle(msg: Message) -> Result<Outcome, HandlerError> {
    let destination = match msg.reply_to.as_deref() {
        Some(reply_to) if msg.has_header("reply-by-publish") => reply_to,
        _ => msg.header("forward-to").unwrap_or(DEFAULT_DESTINATION),
    };
    let out = Outgoing {
        key: msg.key.clone(),
        headers: vec![("enriched-by".into(), "enrich".into())],
        payload: msg.payload.to_ascii_uppercase(),
    };
    weir_sdk::publish(destination, out).map_err(|e| {
        HandlerError::retryable(format!("enrich could not forward: {}", e.describe()))
    })?;
    Ok(Outcome::Ack)
}

weir_sdk::handler!(handle);
