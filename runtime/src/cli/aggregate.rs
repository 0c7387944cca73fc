//! `weir aggregate`: send commands to aggregates of a running server, read an instance's
//! state, and deploy a new (verified) version.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::client::{ServerArgs, agent, answer, encode, url};

/// `weir aggregate ...`.
#[derive(Debug, Subcommand)]
pub enum AggregateCommand {
    /// Sends a command to one aggregate instance; exits 1 when it is rejected or fails
    /// (nothing is appended then).
    Command(CommandArgs),
    /// Prints an instance's current state and revision.
    State(StateArgs),
    /// Deploys a new version of an aggregate, verified against the running one's `evolve`.
    Deploy(DeployArgs),
}

/// `weir aggregate command`.
#[derive(Debug, Args)]
pub struct CommandArgs {
    /// The aggregate (`[aggregates.<name>]`).
    aggregate: String,
    /// The instance id: the command goes to stream `<category>-<id>`.
    id: String,
    /// The command type, e.g. `Place`.
    #[arg(long = "type", short = 't')]
    command_type: String,
    /// The command's data: a JSON document, or text; `-` reads stdin; omit for none.
    data: Option<String>,
    /// The command id (default: a fresh one). Sending again with the same id appends nothing
    /// twice.
    #[arg(long)]
    command_id: Option<String>,
    /// A header `name=value`; repeatable.
    #[arg(long = "header", short = 'H', value_parser = super::client::parse_header)]
    headers: Vec<(String, String)>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir aggregate state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The aggregate.
    aggregate: String,
    /// The instance id.
    id: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir aggregate deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The aggregate.
    aggregate: String,
    /// The new component file.
    component: std::path::PathBuf,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs a `weir aggregate` command.
pub fn run(cmd: AggregateCommand) -> anyhow::Result<()> {
    match cmd {
        AggregateCommand::Command(a) => command(a),
        AggregateCommand::State(a) => state(a),
        AggregateCommand::Deploy(a) => deploy(a),
    }
}

fn command(a: CommandArgs) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "type": a.command_type, "headers": a.headers });
    if let Some(data) = a.data {
        let raw = super::client::payload(data)?;
        match serde_json::from_slice::<serde_json::Value>(&raw) {
            Ok(data) => body["data"] = data,
            Err(_) => {
                body["payload"] = String::from_utf8(raw)
                    .context("the command data is neither JSON nor UTF-8 text")?
                    .into();
            }
        }
    }
    if let Some(id) = a.command_id {
        body["command_id"] = id.into();
    }
    let server = &a.server.server;
    let resp = agent()
        .post(url(
            server,
            &format!(
                "/v1/aggregates/{}/{}/commands",
                encode(&a.aggregate),
                encode(&a.id)
            ),
        ))
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes());
    let answer = answer(server, resp)?;
    if a.json {
        println!("{answer}");
        return Ok(());
    }
    let stream = answer["stream"].as_str().unwrap_or("?");
    match answer["appended"].as_array() {
        Some(r) if answer["duplicate"] == true => {
            println!("already handled: {stream} revisions {}..={}", r[0], r[1]);
        }
        Some(r) => println!("appended to {stream} revisions {}..={}", r[0], r[1]),
        None => println!(
            "nothing to append; {stream} stays at revision {}",
            answer["revision"]
        ),
    }
    if !answer["reply"].is_null() {
        println!("reply: {}", answer["reply"]);
    }
    Ok(())
}

fn state(a: StateArgs) -> anyhow::Result<()> {
    let server = &a.server.server;
    let resp = agent()
        .get(url(
            server,
            &format!("/v1/aggregates/{}/{}", encode(&a.aggregate), encode(&a.id)),
        ))
        .call();
    let answer = answer(server, resp)?;
    println!(
        "{} at revision {}: {}",
        answer["stream"].as_str().unwrap_or("?"),
        answer["revision"],
        answer["state"]
    );
    Ok(())
}

fn deploy(a: DeployArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&a.component)
        .with_context(|| format!("cannot read `{}`", a.component.display()))?;
    let server = &a.server.server;
    let resp = agent()
        .post(url(
            server,
            &format!("/v1/aggregates/{}/versions", encode(&a.aggregate)),
        ))
        .header("content-type", "application/wasm")
        .send(&bytes[..]);
    let answer = answer(server, resp)?;
    if a.json {
        println!("{answer}");
    } else if answer["swapped"] == true {
        println!(
            "deployed {} (state version {}): {} streams and {} events folded through both versions, {} differing",
            answer["hash"]
                .as_str()
                .and_then(|h| h.get(..12))
                .unwrap_or("?"),
            answer["state_version"],
            answer["streams_checked"],
            answer["events_checked"],
            answer["streams_differing"]
        );
    } else {
        println!("unchanged: that component runs already");
    }
    Ok(())
}
