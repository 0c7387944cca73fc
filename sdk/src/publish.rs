//! Publishing messages onward to named queues and topics.

use std::borrow::Borrow;

use crate::bindings::weir::plugin::publish as host;
use crate::{Outgoing, PublishError};

/// Publishes `message` to the queue or topic named `destination`.
///
/// The plugin must be granted publishing to that destination in weir's config. Under
/// exactly-once delivery the message becomes visible only when this invocation commits, and is
/// discarded if the invocation fails. The error converts into a fatal
/// [`HandlerError`](crate::HandlerError) with `?`.
///
/// ```no_run
/// use weir_sdk::{HandlerError, Outgoing};
///
/// # fn f() -> Result<(), HandlerError> {
/// weir_sdk::publish("orders.audit", Outgoing::new("created").with_key("order-9"))?;
/// # Ok(()) }
/// ```
pub fn publish(destination: &str, message: impl Borrow<Outgoing>) -> Result<(), PublishError> {
    host::publish(destination, message.borrow())
}

/// Publishes a payload with no key and no headers; see [`publish`].
pub fn publish_bytes(destination: &str, payload: impl Into<Vec<u8>>) -> Result<(), PublishError> {
    publish(destination, Outgoing::new(payload))
}
