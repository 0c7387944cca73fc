//! `weir plugin list | deploy | rollback`: a running server's plugin versions, over the HTTP API.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{ServerArgs, agent, answer, encode, url};

/// `weir plugin`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Lists plugins with their versions: which is active, when each was loaded, its
    /// invocation and failure counts, and refused deploys.
    List(ListArgs),
    /// Uploads a component and makes it the plugin's active version (validated first; a
    /// refused component leaves the running version in place).
    Deploy(DeployArgs),
    /// Goes back to an earlier version (by default the one active before the current one).
    Rollback(RollbackArgs),
}

/// `weir plugin list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this plugin.
    plugin: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir plugin deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The plugin (as named in the config).
    plugin: String,
    /// The component file (`.wasm`).
    file: PathBuf,
    /// Rebuild the plugin's key-value state with the new version in shadow, from offset 0 of
    /// its binding's source, while the running version keeps serving; swap it in once it has
    /// caught up. Waits until the swap (or a failure) and shows progress.
    #[arg(long)]
    rebuild: bool,
    /// Print the server's JSON answer (with `--rebuild`: the rebuild's final state).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir plugin rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The plugin.
    plugin: String,
    /// The version to go back to (as listed); default: the one active before the current one.
    version: Option<u64>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    match cmd {
        PluginCommand::List(args) => list(args),
        PluginCommand::Deploy(args) => deploy(args),
        PluginCommand::Rollback(args) => rollback(args),
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let plugins = match &args.plugin {
        Some(p) => {
            let path = format!("/v1/plugins/{}", encode(p));
            vec![answer(server, agent().get(url(server, &path)).call())?]
        }
        None => {
            let body = answer(server, agent().get(url(server, "/v1/plugins")).call())?;
            body["plugins"].as_array().cloned().unwrap_or_default()
        }
    };
    if args.json {
        match &args.plugin {
            Some(_) => println!("{}", plugins[0]),
            None => println!("{}", serde_json::json!({ "plugins": plugins })),
        }
        return Ok(());
    }
    for (i, p) in plugins.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_plugin(p);
    }
    Ok(())
}

fn print_plugin(p: &Value) {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let num = |v: &Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
    let mut notes = Vec::new();
    if p["watch"].as_bool() == Some(true) {
        notes.push("watched".to_owned());
    }
    if p["pending_change"].as_bool() == Some(true) {
        notes.push("file change pending".to_owned());
    }
    println!(
        "{}  {}  ({}; {} swaps, {} rollbacks)",
        text(&p["name"]),
        text(&p["path"]),
        if notes.is_empty() {
            "not watched".to_owned()
        } else {
            notes.join(", ")
        },
        num(&p["swaps"]),
        num(&p["rollbacks"]),
    );
    println!(
        "  {:>7}  {:<12}  {:<6}  {:<19}  {:>11}  {:>8}  SHA-256",
        "VERSION", "STATE", "ORIGIN", "ACTIVATED", "INVOCATIONS", "FAILURES"
    );
    for v in p["versions"].as_array().into_iter().flatten() {
        println!(
            "  {:>7}  {:<12}  {:<6}  {:<19}  {:>11}  {:>8}  {}",
            num(&v["version"]),
            text(&v["state"]),
            text(&v["origin"]),
            v["activated_ms"].as_u64().map_or("-".to_owned(), time),
            num(&v["invocations"]),
            num(&v["failures"]),
            v["sha256"].as_str().map_or("?", |h| &h[..h.len().min(16)]),
        );
        if let Some(reason) = v["rolled_back_reason"].as_str() {
            println!("           rolled back: {reason}");
        }
    }
    for r in p["refusals"].as_array().into_iter().flatten() {
        println!(
            "  refused {} ({}, sha256 {}): {}",
            r["at_ms"].as_u64().map_or("-".to_owned(), time),
            text(&r["origin"]),
            r["sha256"].as_str().map_or("?", |h| &h[..h.len().min(16)]),
            text(&r["error"]),
        );
    }
}

fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut path = format!("/v1/plugins/{}/versions", encode(&args.plugin));
    if args.rebuild {
        path.push_str("?rebuild=true");
    }
    let agent = super::client::agent_waiting(std::time::Duration::from_secs(300));
    let body = answer(
        server,
        agent
            .post(url(server, &path))
            .header("content-type", "application/wasm")
            .send(&bytes[..]),
    )?;
    if args.rebuild {
        return follow_rebuild(&args, body);
    }
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let v = &body["version"];
    if body["swapped"].as_bool() == Some(true) {
        println!(
            "deployed `{}` version {} ({} bytes, {} in {:.1} ms); it is active now",
            args.plugin,
            v["version"],
            v["size"],
            match body["loaded_from"].as_str() {
                Some("compiled") => "compiled",
                Some("cache") => "loaded from the precompiled cache",
                Some("memory") => "loaded from memory (compiled lately)",
                _ => "loaded",
            },
            body["load_ms"].as_f64().unwrap_or(0.0),
        );
    } else {
        println!(
            "`{}` version {} has that content and is already active; nothing changed",
            args.plugin, v["version"]
        );
    }
    Ok(())
}

/// Follows a shadow rebuild until it is done or failed.
fn follow_rebuild(args: &DeployArgs, mut body: Value) -> anyhow::Result<()> {
    let server = &args.server.server;
    let path = format!("/v1/plugins/{}/rebuild", encode(&args.plugin));
    let interactive = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut shown = std::time::Instant::now();
    if !args.json {
        eprintln!(
            "rebuilding `{}` in shadow from `{}` (version {} keeps serving)",
            args.plugin,
            body["source"].as_str().unwrap_or("?"),
            body["from_version"]
        );
    }
    loop {
        if let Some("done" | "failed") = body["phase"].as_str() {
            break;
        }
        if interactive && shown.elapsed() >= std::time::Duration::from_secs(1) {
            eprintln!(
                "  {}: at offset {} of {} acknowledged by `{}`, {} handled",
                body["phase"].as_str().unwrap_or("?"),
                body["position"],
                body["live_cursor"],
                body["binding"].as_str().unwrap_or("?"),
                body["handled"]
            );
            shown = std::time::Instant::now();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        body = answer(server, agent().get(url(server, &path)).call())?;
    }
    if args.json {
        println!("{body}");
    }
    if body["phase"] == "failed" {
        anyhow::bail!(
            "the rebuild of `{}` failed: {}",
            args.plugin,
            body["error"].as_str().unwrap_or("unknown error")
        );
    }
    if !args.json {
        println!(
            "rebuilt `{}` in shadow ({} records handled, {} failed) and swapped in version {}; the binding was stopped for {:.1} ms",
            args.plugin,
            body["handled"],
            body["failed"],
            body["version"],
            body["paused_ms"].as_f64().unwrap_or(0.0)
        );
        if let Some(f) = body["first_failure"].as_str() {
            eprintln!(
                "warning: records the new version failed are not in its state; the first: {f}"
            );
        }
    }
    Ok(())
}

fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let mut path = format!("/v1/plugins/{}/rollback", encode(&args.plugin));
    if let Some(v) = args.version {
        path.push_str(&format!("?version={v}"));
    }
    let body = answer(server, agent().post(url(server, &path)).send_empty())?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    println!(
        "rolled `{}` back to version {}; it is active now",
        args.plugin, body["version"]["version"]
    );
    Ok(())
}

/// Milliseconds since the Unix epoch as UTC `YYYY-MM-DD hh:mm:ss`.
fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_utc_civil_dates() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00");
        assert_eq!(super::time(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
