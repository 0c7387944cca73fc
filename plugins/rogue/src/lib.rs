//! `rogue`: misbehaves on demand, to test that the host holds plugin outputs to the limits of
//! external publishes. Header `rogue` says how:
//! - `long-key`: publishes to header `forward-to` with a 2 KiB key;
//! - `many-headers`: publishes with 10,000 headers;
//! - `reserved-header`: publishes with header `weir-replay-for: nobody`;
//! - `big-reply`: replies with header `size` bytes;
//! - `huge-error`: fails (not retryable) with a 10 MiB error message.
//!
//! A refused publish is recorded in key-value state under `refused/<message id>` (the host's
//! error, as the guest saw it) and the message is acknowledged. Without the header (or after a
//! refusal) it forwards the payload to `forward-to` when that header is present.

use weir_sdk::{HandlerError, Message, Outcome, Outgoing, kv};

fn handle(msg: Message) -> Result<Outcome, HandlerError> {
    let to = msg.header("forward-to").map(str::to_owned);
    let attempt = |out: Outgoing| -> Result<Outcome, HandlerError> {
        let Some(to) = &to else {
            return Err(HandlerError::fatal("rogue needs header `forward-to`"));
        };
        match weir_sdk::publish(to, out) {
            Ok(()) => Ok(Outcome::Ack),
            Err(e) => {
                kv::set(&format!("refused/{}", msg.id), e.describe().into_bytes())?;
                Ok(Outcome::Ack)
            }
        }
    };
    match msg.header("rogue") {
        Some("long-key") => attempt(Outgoing::new(msg.payload.clone()).with_key("k".repeat(2048))),
        Some("many-headers") => {
            let mut out = Outgoing::new(msg.payload.clone());
            out.headers = (0..10_000)
                .map(|i| (format!("h{i}"), String::new()))
                .collect();
            attempt(out)
        }
        Some("reserved-header") => {
            let mut out = Outgoing::new(msg.payload.clone());
            out.headers = vec![("weir-replay-for".to_owned(), "nobody".to_owned())];
            attempt(out)
        }
        Some("big-reply") => {
            let size = msg.header("size").and_then(|s| s.parse().ok()).unwrap_or(0);
            Ok(Outcome::Reply(vec![b'r'; size]))
        }
        Some("huge-error") => Err(HandlerError::fatal("e".repeat(10 << 20))),
        _ => match &to {
            Some(to) => {
                weir_sdk::publish(to, Outgoing::new(msg.payload.clone()))?;
                Ok(Outcome::Ack)
            }
            None => Ok(Outcome::Ack),
        },
    }
}

weir_sdk::handler!(handle);
