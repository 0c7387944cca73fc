//! weir: a host runtime for event processing with WebAssembly component plugins.
//!
//! The library behind the `weir` binary. See `ARCHITECTURE.md` for the map; the main entry
//! points are [`config::Config`], [`server::run`] and [`host::Host`].

pub mod api;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod deploy;
pub mod es;
pub mod host;
pub mod ids;
pub mod metrics;
pub mod names;
pub mod server;
pub mod storage;
pub mod validate;
