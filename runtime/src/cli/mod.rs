//! The `weir` command line: `run` a server, and client commands that talk to a running one over
//! its HTTP API (`publish`, `request`, `stream`, `tail`, `replay`, `stats`, `kv`, `dlq`,
//! `binding`, `plugin`), plus `check`,
//! `bench` and `chaos`. Client commands send `--token` / `WEIR_API_TOKEN` as a bearer token.

mod aggregate;
mod bench;
mod binding;
pub(super) mod chaos;
mod chaos_cluster;
mod chaos_deliver;
mod chaos_streams;
mod client;
mod dlq;
pub mod nats_cluster;
mod plugin;
pub(super) mod progress;
mod replay;
mod request;
mod stream;
pub(super) mod stream_client;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// weir: queues, topics and streams whose consumers are sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Bearer token for the server's API (client commands); `weir run` reads the same
    /// variable as an override of `server.api_token`.
    #[arg(long, global = true, env = "WEIR_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Log format on stderr: `pretty` for people, `json` (one object per line) for log
    /// pipelines. Filter with `RUST_LOG` (default `info`), e.g. `RUST_LOG=weir=debug` to see a
    /// span per invocation.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "pretty",
        env = "WEIR_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, with the fields of every span it is in.
    Json,
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
    /// Validates a config file and loads (type-checks) its plugins without serving; exits 1
    /// on any problem.
    Check {
        /// The config file.
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        /// Print the verdict as JSON (`{"ok": true, ...}` or `{"ok": false, "error": {...}}`).
        #[arg(long)]
        json: bool,
    },
    /// Publishes one message to a queue or topic of a running server.
    Publish(client::PublishArgs),
    /// Publishes a request and prints its handler's reply; exits 3 when none comes in time.
    Request(request::RequestArgs),
    /// Event-sourced streams: append (with an expected revision), read, delete.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Aggregates: send a command, read an instance's state, deploy a verified version.
    #[command(subcommand)]
    Aggregate(aggregate::AggregateCommand),
    /// Prints stored messages of a queue or topic, from an offset or a time; `--follow` keeps
    /// printing new ones.
    Tail(client::TailArgs),
    /// Re-delivers a range of a binding's source to that binding alone.
    Replay(replay::ReplayArgs),
    /// Prints a running server's counters (`--json`: the whole document).
    Stats(client::StatsArgs),
    /// Prints a plugin's key-value state.
    Kv(client::KvArgs),
    /// A binding's dead letters: list, show, redrive.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// A binding's parked keys: unpark.
    #[command(subcommand)]
    Binding(binding::BindingCommand),
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
    init_tracing(cli.log_format);
    if let Some(token) = cli.token.filter(|t| !t.is_empty()) {
        let _ = client::TOKEN.set(token);
    }
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

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            config,
            listen,
            repair,
        } => {
            let mut config = Config::load(&config)?;
            config.apply_env()?;
            config.server.repair = repair;
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let done = rt.block_on(crate::server::run(config, shutdown_signal()));
            // Plugin calls still running after the grace period are not waited for.
            rt.shutdown_timeout(std::time::Duration::from_millis(100));
            done
        }
        Command::Check { config, json } => check(&config, json),
        Command::Publish(args) => client::publish(args),
        Command::Request(args) => request::request(args),
        Command::Tail(args) => client::tail(args),
        Command::Stream(cmd) => stream::run(cmd),
        Command::Aggregate(cmd) => aggregate::run(cmd),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Replay(args) => replay::run(args),
        Command::Stats(args) => client::stats(args),
        Command::Kv(args) => client::kv(args),
        Command::Dlq(cmd) => dlq::run(cmd),
        Command::Binding(cmd) => binding::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Chaos(args) => chaos::run(args),
    }
}

/// `weir check`: the config, the environment overrides, and every plugin loaded.
fn check(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let checked = Config::load(path)
        .and_then(|mut c| c.apply_env().map(|()| c))
        .map_err(|e| {
            let position = e
                .position
                .map(|(line, column)| serde_json::json!({"line": line, "column": column}));
            let detail = serde_json::json!({
                "file": e.file.display().to_string(),
                "position": position,
                "message": e.message,
            });
            (anyhow::Error::new(e), detail)
        })
        .and_then(|config| {
            crate::server::Runtime::check(config).map_err(|e| {
                let e = e.context("config is valid but a plugin failed to load");
                let detail = serde_json::json!({
                    "file": path.display().to_string(),
                    "message": format!("{e:#}"),
                });
                (e, detail)
            })
        });
    match checked {
        Ok(rt) => {
            let (d, p, b) = (
                rt.config.destinations.len(),
                rt.plugins.len(),
                rt.config.bindings.len(),
            );
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "destinations": d, "plugins": p, "bindings": b})
                );
            } else {
                println!("ok: {d} destinations, {p} plugins, {b} bindings");
            }
            Ok(())
        }
        Err((e, detail)) => {
            if json {
                println!("{}", serde_json::json!({"ok": false, "error": detail}));
            }
            Err(e)
        }
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
