//! Integration tests for weir, through the public library API and the real `weir` binary. The
//! plugins they use are built from source by `tests/build.rs`.

mod aggregate;
mod backpressure;
mod binary;
mod cli;
mod cli_e2e;
mod client_example;
mod delivery;
mod dlq;
mod fuzz_http;
mod host;
mod http;
mod languages;
mod limits;
mod metrics;
mod nats;
mod nats_bench;
mod nats_deploy;
mod nats_support;
mod ops_http;
mod outbox;
mod park;
mod projection;
mod publish_bench;
mod publish_ws;
mod reload;
mod request;
mod shutdown;
mod streams;
mod supervision;
mod support;
