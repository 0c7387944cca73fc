//! Host bindings generated from `wit/` by wasmtime's `bindgen!`. Generated code stays in this
//! file; the `Host` trait impls live next to the state they touch (`state.rs`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "message-handler",
});

pub(crate) use self::weir::plugin::types::{HandlerError, Message, Outcome, Outgoing};
