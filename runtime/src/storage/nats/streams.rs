//! Destinations on JetStream: one stream per queue or topic (`WEIR_<name>`), one subject per
//! partition (`weir.d.<name>.<p>`), offsets = stream sequence − 1. A record travels as the
//! embedded store's outbox encoding in the message body (so every field survives, whatever
//! header names it has), with `Nats-Msg-Id` = the record id for JetStream's publish dedup.
//!
//! A destination's end offset and recent records come from a follower (an ordered consumer on
//! every partition's subject from the end as it was when first asked), started on first use;
//! reads before it are served one message at a time from the stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Inner, layout, remote};
use crate::names::{DestinationName, Offset};
use crate::storage::state::{self, Op};
use crate::storage::{Record, StorageError, Stored};

/// Records a follower keeps for reads near the end.
const RECENT: usize = 8192;
/// Records one read from before the follower's start fetches at most (one request each).
const RANDOM_READ: usize = 64;

#[derive(Debug)]
pub(super) struct LogStream {
    pub name: DestinationName,
    pub stream: Stream,
    follower: OnceLock<Arc<Follower>>,
}

#[derive(Debug)]
pub(super) struct Follower {
    /// The end when the follower started: records before it are read from the stream.
    start: Offset,
    pub end: watch::Sender<Offset>,
    recent: Mutex<VecDeque<Stored>>,
}

pub(super) fn encode(dest: &DestinationName, record: &Record) -> Vec<u8> {
    let mut buf = Vec::with_capacity(record.payload.len() + 64);
    state::encode_outbox(&mut buf, dest, record);
    buf
}

pub(super) fn decode(bytes: &[u8]) -> Result<Record, StorageError> {
    match state::decode(bytes).map_err(StorageError::Corrupt)?.pop() {
        Some(Op::Outbox { record, .. }) => Ok(record),
        _ => Err(StorageError::Corrupt(
            "a message in a weir stream does not hold a record".into(),
        )),
    }
}

impl LogStream {
    pub fn new(name: DestinationName, stream: Stream) -> LogStream {
        LogStream {
            name,
            stream,
            follower: OnceLock::new(),
        }
    }

    /// The follower, started on first use.
    pub fn follower(self: &Arc<Self>, inner: &Arc<Inner>) -> Result<Arc<Follower>, StorageError> {
        if let Some(f) = self.follower.get() {
            return Ok(Arc::clone(f));
        }
        let mut stream = self.stream.clone();
        let last = inner.block(async move {
            stream
                .info()
                .await
                .map(|i| i.state.last_sequence)
                .map_err(remote)
        })?;
        let f = Arc::new(Follower {
            start: Offset(last),
            end: watch::Sender::new(Offset(last)),
            recent: Mutex::new(VecDeque::new()),
        });
        if self.follower.set(Arc::clone(&f)).is_ok() {
            let (me, fol) = (Arc::clone(self), Arc::clone(&f));
            inner.handle.spawn(async move { me.follow(fol).await });
        }
        Ok(Arc::clone(self.follower.get().expect("set just now")))
    }

    async fn follow(self: Arc<Self>, f: Arc<Follower>) {
        let mut next = f.start;
        loop {
            let config = pull::OrderedConfig {
                filter_subject: layout::subjects(&self.name),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: next.0 + 1,
                },
                ..Default::default()
            };
            let messages = match self.stream.create_consumer(config).await {
                Ok(c) => c.messages().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(destination = %self.name, "nats: cannot follow: {e}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(m) = messages.next().await {
                let Ok(m) = m else { break };
                let Ok(info) = m.info() else { continue };
                let offset = Offset(info.stream_sequence - 1);
                if offset < next {
                    continue;
                }
                match decode(&m.payload) {
                    Ok(record) => {
                        let mut recent = f.recent.lock().expect("follower lock");
                        if recent.len() == RECENT {
                            recent.pop_front();
                        }
                        recent.push_back(Stored {
                            offset,
                            record: Arc::new(record),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(destination = %self.name, %offset, "nats: skipped: {e}")
                    }
                }
                next = offset.next();
                f.end.send_replace(next);
            }
        }
    }

    /// Up to `max` records from `from`: from the follower's recent records when it has them,
    /// else one request per record from the stream.
    pub fn read(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Stored>, StorageError> {
        let f = self.follower(inner)?;
        let end = *f.end.borrow();
        {
            let recent = f.recent.lock().expect("follower lock");
            let first = recent.front().map_or(end, |s| s.offset);
            if from >= first.min(end) && from >= f.start {
                let at = recent.partition_point(|s| s.offset < from);
                return Ok(recent.iter().skip(at).take(max).cloned().collect());
            }
        }
        let to = end.0.min(from.0 + max.min(RANDOM_READ) as u64);
        let stream = self.stream.clone();
        inner.block(async move {
            let mut out = Vec::new();
            for seq in from.0 + 1..=to {
                match stream.get_raw_message(seq).await {
                    Ok(m) => out.push(Stored {
                        offset: Offset(seq - 1),
                        record: Arc::new(decode(&m.payload)?),
                    }),
                    // Removed by retention, or never a weir record: not part of the log.
                    Err(e) => {
                        tracing::debug!(seq, "nats: no record at this sequence: {e}");
                        continue;
                    }
                }
            }
            Ok(out)
        })
    }
}

/// Records scanned at most by one [`read_key`] call: a key's records are found by reading its
/// partition (JetStream has no index by a header or a part of the body), so a call over a
/// long stretch of other keys answers with what it found so far and the caller reads on.
const KEY_SCAN: usize = 20_000;

/// Up to `max` records with `key` from `from`, read from the subject of the key's partition
/// (which holds every record with the key, among others): an ordered consumer from `from`
/// until the subject's end, `max` found, or [`KEY_SCAN`] scanned.
pub(super) async fn read_key(
    mut stream: Stream,
    subject: String,
    key: String,
    from: Offset,
    max: usize,
) -> Result<Vec<Stored>, StorageError> {
    let last = stream.info().await.map_err(remote)?.state.last_sequence;
    let mut out = Vec::new();
    if from.0 >= last || max == 0 {
        return Ok(out);
    }
    let config = pull::OrderedConfig {
        filter_subject: subject,
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: from.0 + 1,
        },
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(remote)?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(remote)?;
    let patience = std::time::Duration::from_secs(5);
    for _ in 0..KEY_SCAN {
        let m = match tokio::time::timeout(patience, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(remote(e)),
            Ok(None) => break,
            Err(_) => {
                return Err(StorageError::Remote(
                    "reading a key's partition timed out".into(),
                ));
            }
        };
        let info = m.info().map_err(remote)?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let record = decode(&m.payload)?;
        if record.key.as_deref() == Some(key.as_str()) {
            out.push(Stored {
                offset: Offset(seq - 1),
                record: Arc::new(record),
            });
        }
        if out.len() >= max || pending == 0 || seq >= last {
            break;
        }
    }
    Ok(out)
}

/// Publishes records with their ids as `Nats-Msg-Id`, all in flight at once, and returns each
/// one's offset and whether JetStream dropped it as a duplicate (same id within the
/// `duplicate_window`).
pub(super) async fn publish_all(
    inner: &Inner,
    records: &[(DestinationName, Record)],
) -> Result<Vec<(Offset, bool)>, StorageError> {
    let mut acks = Vec::with_capacity(records.len());
    for (dest, record) in records {
        let partition = layout::partition_of(record, inner.cfg.partitions);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, record.id.as_str());
        let ack = inner
            .js
            .publish_with_headers(
                layout::subject(dest, partition),
                headers,
                encode(dest, record).into(),
            )
            .await
            .map_err(remote)?;
        acks.push(ack);
    }
    let mut out = Vec::with_capacity(acks.len());
    for ack in acks {
        let ack = ack.await.map_err(remote)?;
        out.push((Offset(ack.sequence - 1), ack.duplicate));
    }
    Ok(out)
}
