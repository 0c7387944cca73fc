//! `weir dlq list | show | redrive`: a binding's dead letters, over the HTTP API.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{ServerArgs, agent, answer, encode, url};
use super::progress::Progress;

/// `weir dlq`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Lists a binding's dead letters not yet redriven.
    List(ListArgs),
    /// Shows one dead letter, by its offset in the dead-letter queue.
    Show(ShowArgs),
    /// Sends a binding's dead letters back to its source, oldest first.
    Redrive(RedriveArgs),
}

/// `weir dlq list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The binding (as named in `weir stats`).
    binding: String,
    /// Most dead letters to print (at most 1000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Start at this offset of the dead-letter queue (default: the first not yet redriven).
    #[arg(long)]
    from: Option<u64>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir dlq show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The binding.
    binding: String,
    /// The dead letter's offset in the dead-letter queue (as listed).
    offset: u64,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir dlq redrive`.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The binding.
    binding: String,
    /// Redrive at most this many (default: all not yet redriven).
    #[arg(long)]
    limit: Option<u64>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Characters of a reason or payload shown in a table cell.
const PREVIEW: usize = 40;

pub fn run(cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::List(args) => list(args),
        DlqCommand::Show(args) => show(args),
        DlqCommand::Redrive(args) => redrive(args),
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let mut path = format!(
        "/v1/bindings/{}/dlq?limit={}",
        encode(&args.binding),
        args.limit
    );
    if let Some(from) = args.from {
        path.push_str(&format!("&from={from}"));
    }
    let body = answer(server, agent().get(url(server, &path)).call())?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let letters = body["dead_letters"].as_array().cloned().unwrap_or_default();
    let queue = body["dead_letter_queue"].as_str().unwrap_or("?");
    if letters.is_empty() {
        println!("no dead letters of `{}` waiting in `{queue}`", args.binding);
        return Ok(());
    }
    println!(
        "{:>8}  {:>8}  {:<17}  {:<PREVIEW$}  PAYLOAD",
        "OFFSET", "ATTEMPTS", "CLASS", "REASON"
    );
    for d in &letters {
        println!(
            "{:>8}  {:>8}  {:<17}  {:<PREVIEW$}  {}",
            d["offset"].as_u64().map_or("?".into(), |n| n.to_string()),
            d["attempts"].as_u64().map_or("?".into(), |n| n.to_string()),
            d["class"].as_str().unwrap_or(""),
            preview(d["reason"].as_str().unwrap_or("")),
            payload_preview(d),
        );
    }
    let (next, end) = (body["next"].as_u64(), body["end"].as_u64());
    if let (Some(next), Some(end)) = (next, end)
        && next < end
    {
        println!("(more: weir dlq list {} --from {next})", args.binding);
    }
    Ok(())
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let path = format!("/v1/bindings/{}/dlq/{}", encode(&args.binding), args.offset);
    let d = answer(server, agent().get(url(server, &path)).call())?;
    if args.json {
        println!("{d}");
        return Ok(());
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    println!("offset         {}", d["offset"]);
    println!("source offset  {}", text(&d["source_offset"]));
    println!("attempts       {}", text(&d["attempts"]));
    println!("class          {}", text(&d["class"]));
    println!("reason         {}", text(&d["reason"]));
    println!("id             {}", text(&d["id"]));
    println!("key            {}", text(&d["key"]));
    for h in d["headers"].as_array().into_iter().flatten() {
        println!("header         {}={}", text(&h[0]), text(&h[1]));
    }
    println!(
        "redriven       {}",
        if d["redriven"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    );
    match (d["payload"].as_str(), d["payload_hex"].as_str()) {
        (Some(p), _) => println!("payload        {p}"),
        (None, Some(hex)) => println!("payload (hex)  {hex}"),
        _ => println!("payload        -"),
    }
    Ok(())
}

fn redrive(args: RedriveArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let binding = encode(&args.binding);
    // Up to the dead-letter queue's end now: letters dead-lettered again meanwhile wait for the
    // next redrive.
    let page = answer(
        server,
        agent()
            .get(url(server, &format!("/v1/bindings/{binding}/dlq?limit=1")))
            .call(),
    )?;
    let end = page["end"].as_u64().unwrap_or(0);
    let mut cursor = page["redrive_cursor"].as_u64().unwrap_or(0);
    let start = cursor;
    let mut progress = Progress::new("redriven", 0);
    let mut redriven = 0;
    let mut body;
    // At least one call, which also names the source.
    loop {
        let chunk = args
            .limit
            .map_or(REDRIVE_CHUNK, |l| (l - redriven).min(REDRIVE_CHUNK));
        let path = format!("/v1/bindings/{binding}/dlq/redrive?limit={chunk}");
        body = answer(server, agent().post(url(server, &path)).send_empty())?;
        let n = body["redriven"].as_u64().unwrap_or(0);
        let next = body["redrive_cursor"].as_u64().unwrap_or(cursor);
        redriven += n;
        progress.set(redriven);
        let moved = next != cursor;
        cursor = next;
        if !moved || cursor >= end || args.limit.is_some_and(|l| redriven >= l) {
            break;
        }
    }
    progress.finish();
    let source = body["source"].as_str().map(str::to_owned);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "binding": args.binding,
                "source": source,
                "redriven": redriven,
                "redrive_cursor": cursor,
                "from": start,
            })
        );
        return Ok(());
    }
    println!(
        "redrove {redriven} dead letter{} of `{}` to `{}`",
        if redriven == 1 { "" } else { "s" },
        args.binding,
        source.as_deref().unwrap_or("?")
    );
    Ok(())
}

/// Dead letters redriven per call.
const REDRIVE_CHUNK: u64 = 1000;

/// At most [`PREVIEW`] characters on one line.
fn preview(s: &str) -> String {
    let line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() <= PREVIEW {
        return line;
    }
    let cut: String = line.chars().take(PREVIEW - 3).collect();
    format!("{cut}...")
}

fn payload_preview(d: &Value) -> String {
    match (d["payload"].as_str(), d["payload_hex"].as_str()) {
        (Some(p), _) => preview(p),
        (None, Some(hex)) => preview(&format!("<{} bytes, hex {hex}>", hex.len() / 2)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_fit_one_line() {
        assert_eq!(preview("short\nline"), "short line");
        let long = "x".repeat(100);
        assert_eq!(preview(&long).chars().count(), PREVIEW);
        assert!(preview(&long).ends_with("..."));
        let d = serde_json::json!({ "payload_hex": "00ff" });
        assert_eq!(payload_preview(&d), "<2 bytes, hex 00ff>");
    }
}
