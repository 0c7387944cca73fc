//! `weir replay`: re-deliver a range of a binding's source to that binding alone, in chunks
//! (one run id, so a retried chunk stores nothing twice), with progress.

use anyhow::Context;
use clap::Args;

use super::client::{ServerArgs, agent, answer, encode, url};
use super::progress::Progress;

/// `weir replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The binding to re-deliver to (other bindings of its source do not see the copies).
    binding: String,
    /// First offset of the range.
    #[arg(long, default_value_t = 0, conflicts_with = "since")]
    from: u64,
    /// Start at the first message stored at most this long ago (`10m`, `2h`) or at this time
    /// in milliseconds since the Unix epoch.
    #[arg(long)]
    since: Option<String>,
    /// End of the range, exclusive (default: the source's end now).
    #[arg(long)]
    to: Option<u64>,
    /// Records per call.
    #[arg(long, default_value_t = 1000)]
    chunk: u64,
    /// Print the totals as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let server = &args.server.server;
    let run = crate::ids::new_message_id();
    let mut start = match &args.since {
        Some(s) => {
            let t = match s.parse::<u64>() {
                Ok(ms) => ms,
                Err(_) => {
                    let ago = crate::config::Span::parse(s).map_err(anyhow::Error::msg)?;
                    crate::ids::now_ms().saturating_sub(ago.0.as_millis() as u64)
                }
            };
            format!("from_time_ms={t}")
        }
        None => format!("from={}", args.from),
    };
    let mut to = args.to;
    let mut progress: Option<Progress> = None;
    let mut replayed = 0;
    let mut first = None;
    loop {
        let mut path = format!(
            "/v1/bindings/{}/replay?{start}&limit={}&run={}",
            encode(&args.binding),
            args.chunk.max(1),
            encode(&run)
        );
        if let Some(to) = to {
            path.push_str(&format!("&to={to}"));
        }
        let body = answer(server, agent().post(url(server, &path)).send_empty())?;
        let (from, end, next) = (
            body["from"].as_u64().context("answer without `from`")?,
            body["to"].as_u64().context("answer without `to`")?,
            body["next"].as_u64().context("answer without `next`")?,
        );
        let first = *first.get_or_insert(from);
        // Later chunks cover the same range: the end the first call saw.
        to = Some(end);
        replayed += body["replayed"].as_u64().unwrap_or(0);
        progress
            .get_or_insert_with(|| Progress::new("replayed", end.saturating_sub(first)))
            .set(next.saturating_sub(first));
        if next >= end {
            if let Some(p) = progress {
                p.finish();
            }
            let out = serde_json::json!({
                "binding": args.binding,
                "source": body["source"],
                "run": run,
                "from": first,
                "to": end,
                "replayed": replayed,
            });
            if args.json {
                println!("{out}");
            } else {
                println!(
                    "replayed {replayed} message{} of `{}` [{first}, {end}) to `{}`",
                    if replayed == 1 { "" } else { "s" },
                    body["source"].as_str().unwrap_or("?"),
                    args.binding
                );
            }
            return Ok(());
        }
        start = format!("from={next}");
    }
}
