//! Time as the host sees it.
//!
//! A plugin has no other clock: `std::time` is unavailable on `wasm32-unknown-unknown`.

use crate::bindings::weir::plugin::clock as host;

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// A monotonic clock in nanoseconds, for measuring durations within one invocation.
pub fn monotonic_ns() -> u64 {
    host::monotonic_ns()
}
