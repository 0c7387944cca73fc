//! Client commands: talk to a running server over its HTTP API.

use std::io::{Read, Write};

use anyhow::Context;
use clap::Args;

use super::stream_client;

/// Where the server is.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the server's HTTP API.
    #[arg(long, env = "WEIR_SERVER", default_value = "http://127.0.0.1:7070")]
    pub(super) server: String,
}

/// The API token client commands send (`--token` or `WEIR_API_TOKEN`), set once by `main`.
pub(super) static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `weir publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The queue or topic.
    destination: String,
    /// The payload; `-` reads it from stdin. Omit it with `--file`.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    payload: Option<String>,
    /// Read the payload from this file (bytes as they are).
    #[arg(long, short = 'f')]
    file: Option<std::path::PathBuf>,
    /// Ordering key.
    #[arg(long)]
    key: Option<String>,
    /// Idempotency key (default: a fresh id).
    #[arg(long, conflicts_with = "lines")]
    id: Option<String>,
    /// A header `name=value`; repeatable.
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Print the server's JSON answer instead of a summary (with `--lines`, one
    /// acknowledgement per line).
    #[arg(long)]
    json: bool,
    /// Publish each line of the payload (stdin with `-`, or `--file`) as its own message, over
    /// the streaming publish (a WebSocket, the fast path) with up to `--window` messages
    /// unacknowledged; each gets a fresh id, and `--key` and `--header` apply to all. A
    /// refused line is reported and the others are still published (exit status 1 then).
    #[arg(long)]
    lines: bool,
    /// With `--lines`: most messages sent and not yet acknowledged.
    #[arg(long, default_value_t = 256, requires = "lines")]
    window: usize,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The queue or topic.
    destination: String,
    /// First offset to print.
    #[arg(long, default_value_t = 0, conflicts_with = "since")]
    from: u64,
    /// Start at the first message stored at most this long ago (`10m`, `2h`, `1d`) or at this
    /// time in milliseconds since the Unix epoch.
    #[arg(long, value_parser = parse_since)]
    since: Option<u64>,
    /// Most messages to print (without `--follow`; with it, no limit unless given).
    #[arg(long)]
    limit: Option<u64>,
    /// Keep printing messages as they are stored, until Ctrl-C (or `--limit`).
    #[arg(long, short = 'F')]
    follow: bool,
    /// Only messages with this key (an aggregate's events, read without scanning other keys).
    #[arg(long)]
    key: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// The plugin.
    plugin: String,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub(super) fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected name=value, found {s:?}"))?;
    Ok((k.to_owned(), v.to_owned()))
}

/// `--since`: a duration ago, or milliseconds since the Unix epoch.
fn parse_since(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let ago = crate::config::Span::parse(s)?;
    Ok(crate::ids::now_ms().saturating_sub(ago.0.as_millis() as u64))
}

pub(super) fn agent() -> ureq::Agent {
    agent_waiting(std::time::Duration::from_secs(30))
}

/// A client that gives up on a call after `timeout`, and sends the API token if there is one.
pub(super) fn agent_waiting(timeout: std::time::Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout));
    let config = match TOKEN.get() {
        Some(token) => {
            let bearer = format!("Bearer {token}");
            config.middleware(
                move |mut req: ureq::http::Request<ureq::SendBody>,
                      next: ureq::middleware::MiddlewareNext| {
                    if let Ok(v) = ureq::http::HeaderValue::from_str(&bearer) {
                        req.headers_mut()
                            .insert(ureq::http::header::AUTHORIZATION, v);
                    }
                    next.handle(req)
                },
            )
        }
        None => config,
    };
    config.build().into()
}

/// An error answer of the server: `{"error": {"code", "message"}}` with its status and,
/// for a temporary refusal such as backpressure, the server's advice on when to retry.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code}, HTTP {status}{retry_after})")]
pub(super) struct ServerError {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// `, retry after Ns` when the server said so, else empty.
    pub retry_after: String,
}

/// Reads a response as JSON, turning an error body into a [`ServerError`].
pub(super) fn answer(
    server: &str,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<serde_json::Value> {
    let mut resp = resp.with_context(|| {
        format!(
            "cannot reach weir at {server} (is `weir run` running? set --server or WEIR_SERVER)"
        )
    })?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(|s| format!(", retry after {s}s"))
        .unwrap_or_default();
    let text = resp
        .body_mut()
        .read_to_string()
        .context("reading the server's answer")?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the server's answer is not JSON: {text}"))?;
    if !status.is_success() {
        let text = |field: &str, default: &str| {
            body["error"][field].as_str().unwrap_or(default).to_owned()
        };
        return Err(ServerError {
            status: status.as_u16(),
            code: text("code", "unknown"),
            message: text("message", "no message"),
            retry_after,
        }
        .into());
    }
    Ok(body)
}

pub(super) fn url(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

pub fn publish(args: PublishArgs) -> anyhow::Result<()> {
    if args.lines {
        return publish_lines(args);
    }
    let payload = match (&args.file, args.payload) {
        (Some(file), _) => std::fs::read(file)
            .with_context(|| format!("reading the payload from {}", file.display()))?,
        (None, Some(p)) => payload(p)?,
        (None, None) => anyhow::bail!("give a payload, `-` for stdin, or --file"),
    };
    let server = &args.server.server;
    let mut req = agent().post(url(
        server,
        &format!("/v1/destinations/{}/messages", encode(&args.destination)),
    ));
    if let Some(key) = &args.key {
        req = req.header("weir-key", key);
    }
    if let Some(id) = &args.id {
        req = req.header("weir-id", id);
    }
    for (k, v) in &args.headers {
        req = req.header(format!("weir-header-{k}"), v);
    }
    let body = answer(server, req.send(&payload[..]))?;
    if args.json {
        println!("{body}");
    } else {
        let duplicate = body["duplicate"].as_bool() == Some(true);
        println!(
            "{} to {} at offset {} (id {})",
            if duplicate {
                "already published"
            } else {
                "published"
            },
            body["destination"].as_str().unwrap_or("?"),
            body["offset"],
            body["id"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `weir publish --lines`: each line a message, over the streaming publish.
fn publish_lines(args: PublishArgs) -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut input: Box<dyn BufRead> = match (&args.file, args.payload.as_deref()) {
        (Some(file), _) => Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        )),
        (None, Some("-")) => Box::new(std::io::stdin().lock()),
        (None, Some(text)) => Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
        (None, None) => anyhow::bail!("give the lines as an argument, `-` for stdin, or --file"),
    };
    let mut read_error = None;
    let mut line = Vec::new();
    let plain = args.key.is_none() && args.headers.is_empty();
    let headers: std::collections::BTreeMap<&str, &str> = args
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let next = |_seq: u64| {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => {
                read_error = Some(e);
                return None;
            }
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if plain {
            return Some(stream_client::Message::binary(line.clone()));
        }
        let mut m = serde_json::json!({ "key": args.key, "headers": headers });
        match std::str::from_utf8(&line) {
            Ok(text) => m["payload"] = text.into(),
            Err(_) => m["payload_hex"] = crate::host::hex(&line).into(),
        }
        if args.key.is_none() {
            m.as_object_mut().expect("an object").remove("key");
        }
        Some(stream_client::Message::text(m.to_string()))
    };
    let (mut published, mut duplicates, mut refused) = (0u64, 0u64, 0u64);
    let (mut first, mut last) = (None, None);
    let stdout = std::io::stdout();
    let on_ack = |seq: u64, text: &str| {
        let ack: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("an acknowledgement that is not JSON: {text}"))?;
        if args.json {
            writeln!(stdout.lock(), "{text}")?;
        }
        match ack["offset"].as_u64() {
            Some(offset) => {
                published += 1;
                if ack["duplicate"] == true {
                    duplicates += 1;
                }
                first.get_or_insert(offset);
                last = Some(offset);
            }
            None => {
                refused += 1;
                eprintln!(
                    "line {}: refused: {} ({})",
                    seq + 1,
                    ack["error"]["message"].as_str().unwrap_or(text),
                    ack["error"]["code"].as_str().unwrap_or("?")
                );
            }
        }
        Ok(())
    };
    let server = &args.server.server;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let token = TOKEN.get().map(String::as_str);
        let mut ws = stream_client::connect(server, &args.destination, token).await?;
        stream_client::publish_all(&mut ws, args.window, next, on_ack).await
    })?;
    if let Some(e) = read_error {
        return Err(e).context("reading the lines to publish");
    }
    if !args.json {
        let range = match (first, last) {
            (Some(a), Some(b)) if a == b => format!(" at offset {a}"),
            (Some(a), Some(b)) => format!(", offsets {a}..={b}"),
            _ => String::new(),
        };
        println!(
            "published {published} messages to {}{range}{}",
            args.destination,
            if duplicates > 0 {
                format!(" ({duplicates} already published)")
            } else {
                String::new()
            }
        );
    }
    if refused > 0 {
        anyhow::bail!("{refused} lines were refused (see above); the others were published");
    }
    Ok(())
}

/// A payload argument: `-` reads stdin.
pub(super) fn payload(arg: String) -> anyhow::Result<Vec<u8>> {
    if arg != "-" {
        return Ok(arg.into_bytes());
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("reading the payload from stdin")?;
    Ok(buf)
}

pub fn tail(args: TailArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let mut from = args.from;
    let mut since = args.since;
    let mut left = args
        .limit
        .unwrap_or(if args.follow { u64::MAX } else { 100 });
    // A long poll waits up to this long on the server, then asks again.
    let wait_ms = if args.follow { 10_000 } else { 0 };
    let agent = agent_waiting(std::time::Duration::from_millis(wait_ms + 30_000));
    let mut out = std::io::stdout().lock();
    loop {
        let start = match since.take() {
            Some(t) => format!("from_time_ms={t}"),
            None => format!("from={from}"),
        };
        let mut path = format!(
            "/v1/destinations/{}/messages?{start}&limit={}&wait_ms={wait_ms}",
            encode(&args.destination),
            left.min(1000)
        );
        if let Some(key) = &args.key {
            path.push_str(&format!("&key={}", encode(key)));
        }
        let body = answer(server, agent.get(url(server, &path)).call())?;
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        if args.json && !args.follow {
            writeln!(out, "{body}")?;
            return Ok(());
        }
        for m in &messages {
            if args.json {
                // One JSON object per line: a follower's output is a stream of them.
                writeln!(out, "{m}")?;
            } else {
                let payload = m["payload"].as_str().map_or_else(
                    || format!("<hex {}>", m["payload_hex"].as_str().unwrap_or("")),
                    str::to_owned,
                );
                let key = m["key"]
                    .as_str()
                    .map(|k| format!(" key={k}"))
                    .unwrap_or_default();
                writeln!(out, "{}{key} {payload}", m["offset"])?;
            }
        }
        out.flush()?;
        left = left.saturating_sub(messages.len() as u64);
        from = body["next"].as_u64().unwrap_or(from);
        if !args.follow || left == 0 {
            return Ok(());
        }
    }
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let body = answer(server, agent().get(url(server, "/v1/stats")).call())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!(
        "{:<32} {:<6} {:>12} {:>10} {:>14}",
        "DESTINATION", "KIND", "MESSAGES", "DEPTH", "BYTES"
    );
    for (name, d) in body["destinations"].as_object().into_iter().flatten() {
        println!(
            "{name:<32} {:<6} {:>12} {:>10} {:>14}",
            d["kind"].as_str().unwrap_or("?"),
            n(&d["messages"]),
            n(&d["depth"]),
            n(&d["bytes"])
        );
    }
    println!();
    println!(
        "{:<32} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "BINDING", "LAG", "ACKED", "RETRIED", "DLQ", "FAILED", "INFLIGHT", "PARKED"
    );
    let mut parked = Vec::new();
    let mut down = Vec::new();
    for (name, b) in body["bindings"].as_object().into_iter().flatten() {
        if b["up"] == false || n(&b["restarts"]) > 0 {
            down.push((name.clone(), b.clone()));
        }
        let failed: u64 = b["failures"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, v)| n(v))
            .sum();
        println!(
            "{name:<32} {:>10} {:>10} {:>8} {:>8} {failed:>8} {:>8} {:>8}",
            n(&b["lag"]),
            n(&b["acked"]),
            n(&b["retried"]),
            n(&b["dead_lettered"]),
            n(&b["in_flight"]),
            n(&b["parked_keys"])
        );
        for k in b["parked"].as_array().into_iter().flatten() {
            parked.push((name.clone(), k.clone()));
        }
    }
    for (name, b) in &down {
        let state = if b["up"] == false {
            "DOWN, being restarted"
        } else {
            "up"
        };
        println!();
        println!(
            "binding {name}: {state}; restarted {} times; last error: {}",
            n(&b["restarts"]),
            b["last_error"]["error"].as_str().unwrap_or("none"),
        );
    }
    if !parked.is_empty() {
        println!();
        println!(
            "{:<32} {:<24} {:>10} {:<24}  REASON",
            "PARKED BINDING", "KEY", "OFFSET", "SINCE"
        );
        for (name, k) in &parked {
            println!(
                "{name:<32} {:<24} {:>10} {:<24}  {}",
                k["key"].as_str().unwrap_or("?"),
                n(&k["offset"]),
                k["since"].as_str().unwrap_or("?"),
                k["reason"].as_str().unwrap_or("?"),
            );
        }
        println!("(release with: weir binding unpark BINDING [KEY])");
    }
    Ok(())
}

/// `weir stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print the server's JSON document instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Percent-encodes a path segment (names are validated by the server; this only keeps the URL
/// well-formed whatever the user typed).
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn kv(args: KvArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let path = format!(
        "/v1/plugins/{}/kv?prefix={}&limit=1000",
        encode(&args.plugin),
        encode(&args.prefix)
    );
    let body = answer(server, agent().get(url(server, &path)).call())?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    for e in body["entries"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        match (e["value"].as_str(), e["value_hex"].as_str()) {
            (Some(text), _) => println!("{key} = {text}"),
            (None, Some(hex)) => println!("{key} = {}", describe_hex(hex)),
            _ => println!("{key}"),
        }
    }
    Ok(())
}

/// Shows binary values as hex, and 8-byte values also as the little-endian u64 most counters use.
fn describe_hex(hex: &str) -> String {
    let bytes = unhex(hex);
    match <[u8; 8]>::try_from(bytes.as_slice()) {
        Ok(b) => format!("{} (hex {hex})", u64::from_le_bytes(b)),
        Err(_) => format!("hex {hex}"),
    }
}

/// The bytes of a `*_hex` field of the server's answers.
pub(super) fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}
