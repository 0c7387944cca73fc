//! `--prefill N`: records written before the measured run and never consumed, so the run meets
//! a source log (and, with `--effects`, an output log whose id indexes exactly-once publishes
//! search for duplicates) of that many records. Appended in big batches, several in flight per
//! log and the logs in parallel, each record with a fresh id (so every sealed segment gets its
//! id index, as publishes fill it); then the binding's cursor is moved past them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::names::{DestinationName, Offset};
use crate::storage::{EmbeddedStorage, Record, Storage};

/// Records per append call.
const BATCH: u64 = 16_384;
/// Append calls per log waiting for their acknowledgement at once.
const IN_FLIGHT: usize = 4;

/// Appends `records` records of `payload_bytes` bytes to each of `logs` (all empty), with
/// progress on stderr.
pub(super) fn fill(
    storage: &EmbeddedStorage,
    logs: &[DestinationName],
    records: u64,
    payload_bytes: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let written = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let total = records * logs.len() as u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::cli::progress::follow("prefilled", total, &finished, || written.load(Relaxed));
        });
        let fills: Vec<_> = logs
            .iter()
            .map(|name| s.spawn(|| fill_one(storage, name, records, payload_bytes, &written)))
            .collect();
        let filled: anyhow::Result<Vec<()>> = fills
            .into_iter()
            .map(|t| t.join().expect("prefill thread"))
            .collect();
        finished.store(true, Relaxed);
        filled
    })?;
    let names: Vec<String> = logs.iter().map(|l| format!("`{l}`")).collect();
    eprintln!(
        "prefilled {} with {records} records each ({payload_bytes} payload bytes) in {:.1} s",
        names.join(" and "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fill_one(
    storage: &EmbeddedStorage,
    name: &DestinationName,
    records: u64,
    payload_bytes: usize,
    written: &AtomicU64,
) -> anyhow::Result<()> {
    let log = storage.log(name).context("the queue to prefill")?;
    let end = *storage.watch_end(name)?.borrow();
    if end != Offset(0) {
        bail!("expected `{name}` to be empty before the prefill, it holds {end} records");
    }
    let payload = vec![b'p'; payload_bytes];
    let timestamp_ms = crate::ids::now_ms();
    let mut waiting = VecDeque::with_capacity(IN_FLIGHT);
    let mut next = 0;
    while next < records || !waiting.is_empty() {
        if next < records && waiting.len() < IN_FLIGHT {
            let n = BATCH.min(records - next);
            let batch: Vec<Record> = (0..n)
                .map(|_| Record {
                    id: crate::ids::new_message_id(),
                    key: None,
                    headers: Vec::new(),
                    payload: payload.clone(),
                    timestamp_ms,
                    reply_to: None,
                    correlation_id: None,
                })
                .collect();
            waiting.push_back(log.append(&batch));
            next += n;
            continue;
        }
        let appended = waiting.pop_front().expect("one is waiting").wait()?;
        written.fetch_add(appended.count, Relaxed);
    }
    Ok(())
}
