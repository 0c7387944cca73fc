//! `trap`: panics on every message; with `panic = "abort"` that is a wasm trap.

use weir_sdk::{HandlerError, Message, Outcome};

fn handle(msg: Message) -> Result<Outcome, HandlerError> {
    panic!("trap plugin panics on message {}", msg.id);
}

weir_sdk::handler!(handle);
