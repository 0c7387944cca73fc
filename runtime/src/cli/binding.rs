//! `weir binding unpark`: release a binding's parked keys, over the HTTP API.

use clap::{Args, Subcommand};

use super::client::{ServerArgs, agent, answer, encode, url};

/// `weir binding`.
#[derive(Debug, Subcommand)]
pub enum BindingCommand {
    /// Releases a parked key (or, without KEY, every parked key of the binding): its parked
    /// message runs again from its first attempt, then the key's later messages in order.
    Unpark(UnparkArgs),
}

/// `weir binding unpark`.
#[derive(Debug, Args)]
pub struct UnparkArgs {
    /// The binding (as named in `weir stats`).
    binding: String,
    /// The key to release (default: every parked key of the binding).
    key: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn run(cmd: BindingCommand) -> anyhow::Result<()> {
    match cmd {
        BindingCommand::Unpark(args) => unpark(args),
    }
}

fn unpark(args: UnparkArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let mut path = format!("/v1/bindings/{}/unpark", encode(&args.binding));
    if let Some(key) = &args.key {
        path.push_str(&format!("?key={}", encode(key)));
    }
    let body = answer(server, agent().post(url(server, &path)).send_empty())?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let released = body["released"].as_array().cloned().unwrap_or_default();
    if released.is_empty() {
        println!("no parked keys of `{}` to release", args.binding);
    }
    for k in &released {
        println!(
            "released key `{}` of `{}`: its message at offset {} runs again (parked since {}: {})",
            k["key"].as_str().unwrap_or("?"),
            args.binding,
            k["offset"],
            k["since"].as_str().unwrap_or("?"),
            k["reason"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}
