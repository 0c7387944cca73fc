//! The `weir` command line: `run` a server, and client commands that talk to a running one over
//! its HTTP API (`publish`, `request`, `tail`, `stats`, `kv`, `dlq`, `plugin`), plus `check`, `bench` and
//! `chaos`.

mod bench;
mod chaos;
mod chaos_deliver;
mod client;
mod dlq;
mod plugin;
mod request;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;

/// weir: queues, topics and streams whose consumers are sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a server from a config file until Ctrl-C or SIGTERM.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        /// Listen on this address instead of `server.listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Open damaged logs by keeping everything before the damage and dropping the rest
        /// (what was dropped is logged) instead of refusing to start.
        #[arg(long)]
        repair: bool,
    },
    /// Validates a config file and loads (type-checks) its plugins without serving.
    Check {
        /// The config file.
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
    },
    /// Publishes one message to a queue or topic of a running server.
    Publish(client::PublishArgs),
    /// Publishes a request and prints its handler's reply; exits 3 when none comes in time.
    Request(request::RequestArgs),
    /// Prints stored messages of a queue or topic.
    Tail(client::TailArgs),
    /// Prints a running server's counters as JSON.
    Stats(client::ServerArgs),
    /// Prints a plugin's key-value state.
    Kv(client::KvArgs),
    /// A binding's dead letters: list, show, redrive.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// A running server's plugin versions: list, deploy, rollback.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Crash-safety runs: SIGKILL a real `weir run` child at random moments and check the data.
    Chaos(chaos::ChaosArgs),
}

/// Parses arguments and runs the command; errors print to stderr with exit code 1 (2 for usage,
/// 3 when `weir request` got no reply in time).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<request::NoReply>().is_some() {
                ExitCode::from(request::EXIT_NO_REPLY)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            config,
            listen,
            repair,
        } => {
            let mut config = Config::load(&config)?;
            config.server.repair = repair;
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(crate::server::run(config, shutdown_signal()))
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            let rt = crate::server::Runtime::check(config)
                .context("config is valid but a plugin failed to load")?;
            println!(
                "ok: {} destinations, {} plugins, {} bindings",
                rt.config.destinations.len(),
                rt.plugins.len(),
                rt.config.bindings.len()
            );
            Ok(())
        }
        Command::Publish(args) => client::publish(args),
        Command::Request(args) => request::request(args),
        Command::Tail(args) => client::tail(args),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Stats(args) => client::stats(args),
        Command::Kv(args) => client::kv(args),
        Command::Dlq(cmd) => dlq::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Chaos(args) => chaos::run(args),
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
