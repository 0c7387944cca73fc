//! Integration tests for weir, through the public library API and the real `weir` binary. The
//! plugins they use are built from source by `tests/build.rs`.

mod backpressure;
mod binary;
mod cli;
mod delivery;
mod dlq;
mod host;
mod http;
mod languages;
mod request;
mod support;
