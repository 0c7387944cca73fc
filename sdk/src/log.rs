//! Logging into the host's log, where each line is tagged with the plugin and the message
//! being handled.
//!
//! Use the functions for fixed text and the macros ([`info!`](crate::info) and friends,
//! exported at the crate root) to format:
//!
//! ```no_run
//! weir_sdk::log::info("started");
//! let n = 3;
//! weir_sdk::warn!("{n} retries left");
//! ```

use crate::Level;
use crate::bindings::weir::plugin::log as host;

/// Writes one line at `level`.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Writes one line at trace level.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes one line at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes one line at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes one line at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes one line at error level.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Formats and writes one line at trace level, like `format!`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Trace, &::std::format!($($arg)+)) };
}

/// Formats and writes one line at debug level, like `format!`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Debug, &::std::format!($($arg)+)) };
}

/// Formats and writes one line at info level, like `format!`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Info, &::std::format!($($arg)+)) };
}

/// Formats and writes one line at warn level, like `format!`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Warn, &::std::format!($($arg)+)) };
}

/// Formats and writes one line at error level, like `format!`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Error, &::std::format!($($arg)+)) };
}
