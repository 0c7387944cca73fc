//! The SDK for writing [weir](https://example.invalid/weir) message handlers in Rust.
//!
//! A weir plugin is a WebAssembly component that exports one function: it receives a
//! [`Message`] and answers with an [`Outcome`] or a [`HandlerError`]. While it runs it may use
//! the host capabilities the operator granted it: [`log`](mod@log), [`publish`], [`kv`] state
//! and the [`clock`]. Nothing else (files, network, environment) is reachable.
//!
//! A complete plugin:
//!
//! ```
//! use weir_sdk::{HandlerError, Message, Outcome, Outgoing};
//!
//! /// Counts orders per customer and forwards large ones for review.
//! fn handle(msg: Message) -> Result<Outcome, HandlerError> {
//!     let Some(customer) = msg.header("customer").map(str::to_owned) else {
//!         return Ok(Outcome::DeadLetter("missing header `customer`".into()));
//!     };
//!     let key = format!("orders/{customer}");
//!     let count = weir_sdk::kv::get(&key)?
//!         .and_then(|v| <[u8; 8]>::try_from(v).ok())
//!         .map_or(0, u64::from_le_bytes);
//!     weir_sdk::kv::set(&key, (count + 1).to_le_bytes())?;
//!     if msg.payload.len() > 1024 {
//!         weir_sdk::info!("order {} from {customer} sent for review", msg.id);
//!         let review = Outgoing::new(msg.payload).with_header("customer", customer);
//!         weir_sdk::publish("orders.review", review)?;
//!     }
//!     Ok(Outcome::Ack)
//! }
//!
//! weir_sdk::handler!(handle);
//! # fn main() {}
//! ```
//!
//! Build it as a `cdylib` for `wasm32-unknown-unknown` and turn the core module into a
//! component; weir's `scripts/build-plugins` does both for every crate in `plugins/`.
//!
//! Errors from host calls convert into [`HandlerError`] with `?`: a [`KvError::Unavailable`]
//! is retryable, every other refusal is fatal (see the `From` impls on [`HandlerError`]).
//!
//! On targets other than `wasm32` everything compiles, so plugins can be type-checked and
//! linted natively, but calling a host import there panics.

#![deny(missing_docs)]

#[doc(hidden)]
#[allow(
    missing_docs,
    unused_qualifications,
    clippy::all,
    // The canonical-ABI glue reads and writes linear memory through raw pointers.
    unsafe_code
)]
pub mod bindings;

pub mod clock;
mod error;
mod handler;
pub mod kv;
pub mod log;
mod message;
mod publish;

pub use bindings::weir::plugin::kv::KvError;
pub use bindings::weir::plugin::log::Level;
pub use bindings::weir::plugin::publish::PublishError;
pub use bindings::weir::plugin::types::{HandlerError, Headers, Message, Outcome, Outgoing};
pub use publish::{publish, publish_bytes};
