//! `noop`: acknowledges every message; the trivial plugin `weir bench invoke` measures.

use weir_sdk::{HandlerError, Message, Outcome};

fn handle(msg: Message) -> Result<Outcome, HandlerError> {
    // Touch the payload so the call is not entirely empty, and nothing more.
    std::hint::black_box(msg.payload.len());
    Ok(Outcome::Ack)
}

weir_sdk::handler!(handle);
