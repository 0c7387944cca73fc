//! The WebAssembly host: compiles, validates, caches and runs plugin components. wasmtime is used
//! only inside this module; the rest of weir sees [`Host`], [`Plugin`], [`Message`] and the
//! classified result of an [`Invocation`].
//!
//! **Invariant:** a plugin reaches only the `weir:plugin` imports it was built against; a
//! component importing anything else is refused at load.
//!
//! **Invariant:** an instance that trapped (including timeouts, fuel and memory exhaustion) is
//! dropped, never reused.

mod aggregate;
mod background;
mod bindings;
mod cache;
mod engine;
mod gate;
mod invoke;
mod plugin;
mod recent;
mod state;

pub use aggregate::{Aggregate, AggregateSpec, Command, DecidedEvent, Decision, Rejection};
pub use cache::ensure_private_dir;
pub use engine::{DEFAULT_MEMORY_CACHE_BYTES, Host, HostOptions};
pub use gate::{KvGate, KvGuard};
pub use invoke::{Effects, Failure, FailureClass, Invocation, Message, Outcome};
pub(crate) use plugin::hex;
pub use plugin::{LoadError, LoadedFrom, Plugin, PluginSpec, content_hash};
