//! `weir request`: publish a request to a running server and print its handler's reply.

use std::io::Write;

use anyhow::Context;
use clap::Args;

use super::client::{self, ServerArgs, ServerError};
use crate::config::Span;

/// Exit code of `weir request` when no reply came within the timeout.
pub const EXIT_NO_REPLY: u8 = 3;

/// `weir request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The queue or topic.
    destination: String,
    /// The payload; `-` reads it from stdin.
    payload: String,
    /// How long to wait for the reply (at most 300s).
    #[arg(long, default_value = "5s", value_parser = Span::parse)]
    timeout: Span,
    /// Ordering key.
    #[arg(long)]
    key: Option<String>,
    /// Idempotency key (default: a fresh id).
    #[arg(long)]
    id: Option<String>,
    /// A header `name=value`; repeatable.
    #[arg(long = "header", short = 'H', value_parser = client::parse_header)]
    headers: Vec<(String, String)>,
    /// Print the server's JSON answer (request, correlation id and reply) instead of the reply's
    /// payload.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// No reply came in time: `weir request` exits with [`EXIT_NO_REPLY`].
#[derive(Debug, thiserror::Error)]
#[error("no reply from {destination} within {timeout}")]
pub struct NoReply {
    destination: String,
    /// The timeout as the user wrote it.
    timeout: String,
}

pub fn request(args: RequestArgs) -> anyhow::Result<()> {
    let payload = client::payload(args.payload)?;
    let server = &args.server.server;
    let timeout = args.timeout.0;
    let path = format!(
        "/v1/destinations/{}/requests?timeout_ms={}",
        client::encode(&args.destination),
        timeout.as_millis()
    );
    // The server answers by the timeout; leave it room for the publish and the network.
    let agent = client::agent_waiting(timeout + std::time::Duration::from_secs(30));
    let mut req = agent.post(client::url(server, &path));
    if let Some(key) = &args.key {
        req = req.header("weir-key", key);
    }
    if let Some(id) = &args.id {
        req = req.header("weir-id", id);
    }
    for (k, v) in &args.headers {
        req = req.header(format!("weir-header-{k}"), v);
    }
    let body = match client::answer(server, req.send(&payload[..])) {
        Err(e)
            if e.downcast_ref::<ServerError>()
                .is_some_and(|s| s.code == "request_timeout") =>
        {
            return Err(NoReply {
                destination: args.destination,
                timeout: humanize(timeout),
            }
            .into());
        }
        answer => answer?,
    };
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let reply = &body["reply"];
    let mut out = std::io::stdout().lock();
    match (reply["payload"].as_str(), reply["payload_hex"].as_str()) {
        (Some(text), _) => writeln!(out, "{text}"),
        // Binary replies go out as they are.
        (None, Some(hex)) => out.write_all(&client::unhex(hex)),
        (None, None) => anyhow::bail!("the server's answer has no reply payload: {body}"),
    }
    .context("writing the reply")?;
    Ok(())
}

/// A duration the way a person writes it: `5s`, `250ms`, `2m`.
fn humanize(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        let check = |ms: u64, expect: &str| {
            assert_eq!(humanize(std::time::Duration::from_millis(ms)), expect);
        };
        check(5000, "5s");
        check(250, "250ms");
        check(1500, "1500ms");
        check(120_000, "2m");
        assert_eq!(client::unhex("00ff41"), vec![0, 255, b'A']);
    }
}
