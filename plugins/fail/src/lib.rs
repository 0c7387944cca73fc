//! `fail`: returns a handler error on every message, retryable when header `retryable` is
//! `true`.

use weir_sdk::{HandlerError, Message, Outcome};

fn handle(msg: Message) -> Result<Outcome, HandlerError> {
    Err(HandlerError {
        message: "fail plugin always fails".into(),
        retryable: msg.header("retryable") == Some("true"),
    })
}

weir_sdk::handler!(handle);
