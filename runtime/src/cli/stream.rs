//! `weir stream`: append to, read and delete event-sourced streams of a running server.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::client::{ServerArgs, agent, answer, encode, url};

/// `weir stream ...`.
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Appends one event to a stream, with an expected revision; exits 1 on a conflict (the
    /// stream's actual revision is printed).
    Append(AppendArgs),
    /// Prints a stream's events (or, with `--all`, the store's: every stream, a category or an
    /// event type, in commit order).
    Read(ReadArgs),
    /// Deletes a stream: soft (it reads as not found; the name can be appended to again) or
    /// `--hard` (a tombstone: no more appends).
    Delete(DeleteArgs),
}

/// `weir stream append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The stream store (`[streams.<name>]`).
    store: String,
    /// The stream, e.g. `order-42`.
    stream: String,
    /// The event type, e.g. `OrderPlaced`.
    #[arg(long = "type", short = 't')]
    event_type: String,
    /// The event's data: a JSON document, or text; `-` reads stdin.
    data: String,
    /// What the stream must look like: `any`, `no-stream`, `stream-exists` or a revision.
    #[arg(long, short = 'e', default_value = "any")]
    expected: String,
    /// The event id (default: a fresh one). Appending again with the same id stores nothing
    /// twice.
    #[arg(long)]
    id: Option<String>,
    /// A header `name=value`; repeatable.
    #[arg(long = "header", short = 'H', value_parser = super::client::parse_header)]
    headers: Vec<(String, String)>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir stream read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The stream store.
    store: String,
    /// The stream; omit it with `--all`, `--category` or `--type`.
    #[arg(required_unless_present_any = ["all", "category", "event_type"])]
    stream: Option<String>,
    /// Read every stream of the store, in commit order.
    #[arg(long, conflicts_with = "stream")]
    all: bool,
    /// Read the streams of one category, in commit order.
    #[arg(long, conflicts_with_all = ["stream", "event_type"])]
    category: Option<String>,
    /// Read the events of one type, in commit order.
    #[arg(long = "type", conflicts_with = "stream")]
    event_type: Option<String>,
    /// First revision (a stream) or position (the store).
    #[arg(long)]
    from: Option<u64>,
    /// Read a stream backwards, newest first.
    #[arg(long)]
    backwards: bool,
    /// Most events.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir stream delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The stream store.
    store: String,
    /// The stream.
    stream: String,
    /// Tombstone the stream: it takes no more events, ever.
    #[arg(long)]
    hard: bool,
    /// The stream must be at this revision.
    #[arg(long, short = 'e', default_value = "any")]
    expected: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs a `weir stream` command.
pub fn run(cmd: StreamCommand) -> anyhow::Result<()> {
    match cmd {
        StreamCommand::Append(a) => append(a),
        StreamCommand::Read(a) => read(a),
        StreamCommand::Delete(a) => delete(a),
    }
}

fn append(a: AppendArgs) -> anyhow::Result<()> {
    let expected: crate::es::ExpectedRevision = a.expected.parse()?;
    let raw = super::client::payload(a.data)?;
    let mut event = serde_json::json!({ "type": a.event_type, "headers": a.headers });
    match serde_json::from_slice::<serde_json::Value>(&raw) {
        Ok(data) => event["data"] = data,
        Err(_) => {
            event["payload"] = String::from_utf8(raw)
                .context("the event data is neither JSON nor UTF-8 text")?
                .into();
        }
    }
    if let Some(id) = a.id {
        event["id"] = id.into();
    }
    let expected = match expected {
        crate::es::ExpectedRevision::Exact(n) => serde_json::json!(n),
        other => serde_json::json!(other.to_string()),
    };
    let server = &a.server.server;
    let body = serde_json::json!({ "expected_revision": expected, "events": [event] });
    let resp = agent()
        .post(url(
            server,
            &format!(
                "/v1/streams/{}/streams/{}",
                encode(&a.store),
                encode(&a.stream)
            ),
        ))
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes());
    let answer = answer(server, resp)?;
    if a.json {
        println!("{answer}");
    } else {
        println!(
            "{} {} revision {} at position {}",
            if answer["duplicate"].as_bool() == Some(true) {
                "already appended to"
            } else {
                "appended to"
            },
            answer["stream"].as_str().unwrap_or("?"),
            answer["last_revision"],
            answer["last_position"],
        );
    }
    Ok(())
}

fn read(a: ReadArgs) -> anyhow::Result<()> {
    let server = &a.server.server;
    let mut query = vec![format!("limit={}", a.limit)];
    if let Some(from) = a.from {
        query.push(format!("from={from}"));
    }
    let path = match &a.stream {
        Some(stream) => {
            if a.backwards {
                query.push("direction=backward".into());
            }
            format!(
                "/v1/streams/{}/streams/{}",
                encode(&a.store),
                encode(stream)
            )
        }
        None => {
            if let Some(c) = &a.category {
                query.push(format!("category={}", encode(c)));
            }
            if let Some(t) = &a.event_type {
                query.push(format!("type={}", encode(t)));
            }
            format!("/v1/streams/{}/events", encode(&a.store))
        }
    };
    let resp = agent()
        .get(url(server, &format!("{path}?{}", query.join("&"))))
        .call();
    let answer = answer(server, resp)?;
    if a.json {
        println!("{answer}");
        return Ok(());
    }
    for e in answer["events"].as_array().into_iter().flatten() {
        let data = if e["data"].is_null() {
            e["payload"]
                .as_str()
                .map_or_else(|| e["payload_hex"].to_string(), str::to_owned)
        } else {
            e["data"].to_string()
        };
        println!(
            "{}@{} (position {}) {} {}",
            e["stream"].as_str().unwrap_or("?"),
            e["revision"],
            e["position"],
            e["type"].as_str().unwrap_or("?"),
            data
        );
    }
    Ok(())
}

fn delete(a: DeleteArgs) -> anyhow::Result<()> {
    let expected: crate::es::ExpectedRevision = a.expected.parse()?;
    let server = &a.server.server;
    let resp = agent()
        .delete(url(
            server,
            &format!(
                "/v1/streams/{}/streams/{}?hard={}&expected_revision={}",
                encode(&a.store),
                encode(&a.stream),
                a.hard,
                encode(&expected.to_string())
            ),
        ))
        .call();
    let answer = answer(server, resp)?;
    println!(
        "{} {} ({} delete at position {})",
        if a.hard { "tombstoned" } else { "deleted" },
        a.stream,
        answer["deleted"].as_str().unwrap_or("?"),
        answer["position"]
    );
    Ok(())
}
