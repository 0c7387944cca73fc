//! Consumer and plugin state kept by the embedded store: binding cursors and per-plugin
//! key-value entries, acknowledgements above the cursor and delivery counts, and the binary
//! encoding of changes to them (journal records and snapshots share it).
//!
//! A binding's cursor is its low watermark: every offset below it is acknowledged. Offsets
//! acknowledged out of order are kept in a set until the cursor reaches them. Delivery counts
//! are kept for offsets at or above the cursor that were delivered and not yet acknowledged.
//!
//! Encoding: a sequence of operations, each a tag byte then length-prefixed fields
//! (little-endian): `1` kv-set (u16 plugin, u32 key, u32 value), `2` kv-delete (u16 plugin, u32
//! key), `3` cursor (u16 binding, u64 offset), `4` ack (u16 binding, u64 offset), `5` delivered
//! (u16 binding, u64 offset, u32 count), `6` published (u16 log, u64 end; written by versions
//! before the outbox, still read), `7` outbox (u16 log, then the record: u32 id, u8 flags (bit 0
//! key, bit 1 reply-to, bit 2 correlation id), each present one as u32-prefixed text, u64
//! timestamp, u32 header count and per header u32 name and u32 value, u32 payload). Decoding
//! checks every length against the input.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Record;
use crate::names::{BindingName, DestinationName, Offset, PluginName};

const KV_SET: u8 = 1;
const KV_DELETE: u8 = 2;
const CURSOR: u8 = 3;
const ACK: u8 = 4;
const DELIVERED: u8 = 5;
const PUBLISHED: u8 = 6;
const OUTBOX: u8 = 7;

const HAS_KEY: u8 = 1;
const HAS_REPLY_TO: u8 = 2;
const HAS_CORRELATION: u8 = 4;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    KvSet {
        plugin: PluginName,
        key: String,
        value: Vec<u8>,
    },
    KvDelete {
        plugin: PluginName,
        key: String,
    },
    Cursor {
        binding: BindingName,
        offset: Offset,
    },
    Ack {
        binding: BindingName,
        offset: Offset,
    },
    Delivered {
        binding: BindingName,
        offset: Offset,
        count: u32,
    },
    /// The record's commit appended records to `log` ending before `end`: the record is valid
    /// only if the log still reaches `end` after a crash (checked on recovery, no state).
    Published {
        log: DestinationName,
        end: Offset,
    },
    /// A record the commit publishes to `log`, appended there once this journal record is
    /// durable (the transactional outbox; re-appended on recovery if a crash cut it off).
    Outbox {
        log: DestinationName,
        record: Record,
    },
}

impl Op {
    /// Whether the operation is an effect of a handler (a key-value write or a publish), which a
    /// later record may depend on, rather than a fact about deliveries.
    pub fn is_effect(&self) -> bool {
        matches!(
            self,
            Op::KvSet { .. } | Op::KvDelete { .. } | Op::Published { .. } | Op::Outbox { .. }
        )
    }
}

/// Cursors and key-value entries.
#[derive(Debug, Default, Clone)]
pub(crate) struct State {
    pub cursors: HashMap<BindingName, Offset>,
    pub kv: HashMap<PluginName, BTreeMap<String, Vec<u8>>>,
    /// Offsets acknowledged at or above the cursor.
    pub acked: HashMap<BindingName, BTreeSet<Offset>>,
    /// Delivery counts of unacknowledged offsets at or above the cursor.
    pub deliveries: HashMap<BindingName, BTreeMap<Offset, u32>>,
    /// Leases (visibility timeouts): until when, in ms since the epoch, a delivered offset is
    /// held by its consumer. In memory only, never journaled: a restart voids every lease (their
    /// holders are gone), so every unacknowledged offset is due again.
    pub leases: HashMap<BindingName, BTreeMap<Offset, u64>>,
}

impl State {
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::KvSet { plugin, key, value } => {
                self.kv.entry(plugin).or_default().insert(key, value);
            }
            Op::KvDelete { plugin, key } => {
                if let Some(map) = self.kv.get_mut(&plugin) {
                    map.remove(&key);
                }
            }
            Op::Cursor { binding, offset } => {
                self.cursors.insert(binding, offset);
            }
            Op::Ack { binding, offset } => {
                let cursor = self.cursors.entry(binding.clone()).or_default();
                if offset < *cursor {
                    return;
                }
                let acked = self.acked.entry(binding.clone()).or_default();
                acked.insert(offset);
                while acked.remove(cursor) {
                    *cursor = cursor.next();
                }
                let cursor = *cursor;
                // Per acknowledgement: only the entries below the cursor go (no scan of the
                // map; it holds a whole window of in-flight offsets).
                if let Some(l) = self.leases.get_mut(&binding) {
                    l.remove(&offset);
                    while l.first_key_value().is_some_and(|(o, _)| *o < cursor) {
                        l.pop_first();
                    }
                }
                if let Some(d) = self.deliveries.get_mut(&binding) {
                    d.remove(&offset);
                    while d.first_key_value().is_some_and(|(o, _)| *o < cursor) {
                        d.pop_first();
                    }
                }
            }
            Op::Published { .. } | Op::Outbox { .. } => {}
            Op::Delivered {
                binding,
                offset,
                count,
            } => {
                if count == 0 {
                    if let Some(d) = self.deliveries.get_mut(&binding) {
                        d.remove(&offset);
                    }
                } else if offset >= self.cursors.get(&binding).copied().unwrap_or_default() {
                    self.deliveries
                        .entry(binding)
                        .or_default()
                        .insert(offset, count);
                }
            }
        }
    }

    /// Holds `offset` for `binding` until `until_ms`.
    pub fn lease(&mut self, binding: &BindingName, offset: Offset, until_ms: u64) {
        self.leases
            .entry(binding.clone())
            .or_default()
            .insert(offset, until_ms);
    }

    /// Offsets whose lease ended by `now_ms` without an acknowledgement, in offset order.
    pub fn expired_leases(&self, binding: &BindingName, now_ms: u64) -> Vec<Offset> {
        let Some(leases) = self.leases.get(binding) else {
            return Vec::new();
        };
        leases
            .iter()
            .filter(|(o, until)| **until <= now_ms && !self.is_acked(binding, **o))
            .map(|(o, _)| *o)
            .collect()
    }

    /// Whether `binding` has acknowledged `offset`.
    pub fn is_acked(&self, binding: &BindingName, offset: Offset) -> bool {
        offset < self.cursors.get(binding).copied().unwrap_or_default()
            || self.acked.get(binding).is_some_and(|a| a.contains(&offset))
    }

    /// How many times `offset` has been delivered to `binding` without an acknowledgement.
    pub fn deliveries(&self, binding: &BindingName, offset: Offset) -> u32 {
        self.deliveries
            .get(binding)
            .and_then(|d| d.get(&offset))
            .copied()
            .unwrap_or(0)
    }

    /// Every entry as operations that rebuild this state.
    pub fn encode_all(&self, buf: &mut Vec<u8>) {
        for (binding, offset) in &self.cursors {
            encode_cursor(buf, binding, *offset);
        }
        for (binding, acked) in &self.acked {
            for offset in acked {
                encode_offset(buf, ACK, binding, *offset);
            }
        }
        for (binding, counts) in &self.deliveries {
            for (offset, count) in counts {
                encode_delivered(buf, binding, *offset, *count);
            }
        }
        for (plugin, map) in &self.kv {
            for (key, value) in map {
                encode_kv(buf, plugin, key, Some(value));
            }
        }
    }
}

pub(crate) fn encode_kv(buf: &mut Vec<u8>, plugin: &PluginName, key: &str, value: Option<&[u8]>) {
    buf.push(if value.is_some() { KV_SET } else { KV_DELETE });
    put_str16(buf, plugin.as_str());
    put_bytes32(buf, key.as_bytes());
    if let Some(v) = value {
        put_bytes32(buf, v);
    }
}

pub(crate) fn encode_cursor(buf: &mut Vec<u8>, binding: &BindingName, offset: Offset) {
    encode_offset(buf, CURSOR, binding, offset);
}

pub(crate) fn encode_ack(buf: &mut Vec<u8>, binding: &BindingName, offset: Offset) {
    encode_offset(buf, ACK, binding, offset);
}

pub(crate) fn encode_delivered(
    buf: &mut Vec<u8>,
    binding: &BindingName,
    offset: Offset,
    count: u32,
) {
    encode_offset(buf, DELIVERED, binding, offset);
    buf.extend_from_slice(&count.to_le_bytes());
}

/// Journals before the outbox wrote these; kept to test that they are still read.
#[cfg(test)]
pub(crate) fn encode_published(buf: &mut Vec<u8>, log: &DestinationName, end: Offset) {
    buf.push(PUBLISHED);
    put_str16(buf, log.as_str());
    buf.extend_from_slice(&end.0.to_le_bytes());
}

pub(crate) fn encode_outbox(buf: &mut Vec<u8>, log: &DestinationName, record: &Record) {
    buf.push(OUTBOX);
    put_str16(buf, log.as_str());
    put_bytes32(buf, record.id.as_bytes());
    let mut flags = 0;
    for (present, bit) in [
        (record.key.is_some(), HAS_KEY),
        (record.reply_to.is_some(), HAS_REPLY_TO),
        (record.correlation_id.is_some(), HAS_CORRELATION),
    ] {
        if present {
            flags |= bit;
        }
    }
    buf.push(flags);
    for text in [&record.key, &record.reply_to, &record.correlation_id]
        .into_iter()
        .flatten()
    {
        put_bytes32(buf, text.as_bytes());
    }
    buf.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    let headers = u32::try_from(record.headers.len()).expect("headers are bounded by the frame");
    buf.extend_from_slice(&headers.to_le_bytes());
    for (name, value) in &record.headers {
        put_bytes32(buf, name.as_bytes());
        put_bytes32(buf, value.as_bytes());
    }
    put_bytes32(buf, &record.payload);
}

fn encode_offset(buf: &mut Vec<u8>, tag: u8, binding: &BindingName, offset: Offset) {
    buf.push(tag);
    put_str16(buf, binding.as_str());
    buf.extend_from_slice(&offset.0.to_le_bytes());
}

fn put_str16(buf: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("names are at most a few hundred bytes");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_bytes32(buf: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("fields are bounded by a journal record (64 MiB)");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(b);
}

/// Decodes a sequence of operations; an error says what is wrong and where.
pub(crate) fn decode(mut bytes: &[u8]) -> Result<Vec<Op>, String> {
    let total = bytes.len();
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        let at = total - bytes.len();
        bytes = rest;
        let op = match tag {
            KV_SET | KV_DELETE => {
                let plugin = take_name(&mut bytes, 2, PluginName::from_stored)
                    .map_err(|e| format!("{e} at byte {at}"))?;
                let key = take(&mut bytes, 4).map_err(|e| format!("{e} at byte {at}"))?;
                let key = String::from_utf8(key.to_vec())
                    .map_err(|_| format!("kv key is not UTF-8 at byte {at}"))?;
                if tag == KV_SET {
                    let value = take(&mut bytes, 4)
                        .map_err(|e| format!("{e} at byte {at}"))?
                        .to_vec();
                    Op::KvSet { plugin, key, value }
                } else {
                    Op::KvDelete { plugin, key }
                }
            }
            CURSOR | ACK | DELIVERED => {
                let binding = take_name(&mut bytes, 2, BindingName::from_stored)
                    .map_err(|e| format!("{e} at byte {at}"))?;
                let offset = take_offset(&mut bytes, at)?;
                match tag {
                    CURSOR => Op::Cursor { binding, offset },
                    ACK => Op::Ack { binding, offset },
                    _ => {
                        let (raw, rest) = bytes
                            .split_first_chunk::<4>()
                            .ok_or(format!("count truncated at byte {at}"))?;
                        bytes = rest;
                        Op::Delivered {
                            binding,
                            offset,
                            count: u32::from_le_bytes(*raw),
                        }
                    }
                }
            }
            PUBLISHED => {
                let log = take_name(&mut bytes, 2, DestinationName::new)
                    .map_err(|e| format!("{e} at byte {at}"))?;
                Op::Published {
                    log,
                    end: take_offset(&mut bytes, at)?,
                }
            }
            OUTBOX => {
                let log = take_name(&mut bytes, 2, DestinationName::new)
                    .map_err(|e| format!("{e} at byte {at}"))?;
                let record = take_record(&mut bytes)
                    .map_err(|e| format!("outbox record {e} at byte {at}"))?;
                Op::Outbox { log, record }
            }
            other => return Err(format!("unknown state operation {other} at byte {at}")),
        };
        ops.push(op);
    }
    Ok(ops)
}

/// Takes an outbox record (see the module's encoding).
fn take_record(bytes: &mut &[u8]) -> Result<Record, String> {
    let text = |bytes: &mut &[u8], what: &str| -> Result<String, String> {
        let raw = take(bytes, 4).map_err(|e| format!("{what}: {e}"))?;
        String::from_utf8(raw.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    };
    let id = text(bytes, "id")?;
    let (&flags, rest) = bytes.split_first().ok_or("flags truncated")?;
    *bytes = rest;
    let optional = |bit: u8, what: &str, bytes: &mut &[u8]| -> Result<Option<String>, String> {
        if flags & bit == 0 {
            Ok(None)
        } else {
            text(bytes, what).map(Some)
        }
    };
    let key = optional(HAS_KEY, "key", bytes)?;
    let reply_to = optional(HAS_REPLY_TO, "reply-to", bytes)?;
    let correlation_id = optional(HAS_CORRELATION, "correlation id", bytes)?;
    let (raw, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or("timestamp truncated")?;
    let timestamp_ms = u64::from_le_bytes(*raw);
    let (raw, rest) = rest
        .split_first_chunk::<4>()
        .ok_or("header count truncated")?;
    *bytes = rest;
    let count = u32::from_le_bytes(*raw) as usize;
    // Every header takes at least 8 bytes: a count larger than what is left is damage.
    if count > bytes.len() / 8 {
        return Err(format!("{count} headers in {} bytes", bytes.len()));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        headers.push((text(bytes, "header name")?, text(bytes, "header value")?));
    }
    let payload = take(bytes, 4)
        .map_err(|e| format!("payload: {e}"))?
        .to_vec();
    Ok(Record {
        id,
        key,
        headers,
        payload,
        timestamp_ms,
        reply_to,
        correlation_id,
    })
}

/// Takes a little-endian u64 offset.
fn take_offset(bytes: &mut &[u8], at: usize) -> Result<Offset, String> {
    let (raw, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or(format!("offset truncated at byte {at}"))?;
    *bytes = rest;
    Ok(Offset(u64::from_le_bytes(*raw)))
}

/// Takes a length-prefixed field (`width` bytes of little-endian length).
fn take<'a>(bytes: &mut &'a [u8], width: usize) -> Result<&'a [u8], String> {
    if bytes.len() < width {
        return Err("length truncated".to_owned());
    }
    let mut len = [0u8; 8];
    len[..width].copy_from_slice(&bytes[..width]);
    let len =
        usize::try_from(u64::from_le_bytes(len)).map_err(|_| "length overflows".to_owned())?;
    let rest = &bytes[width..];
    if rest.len() < len {
        return Err(format!("field of {len} bytes but only {} left", rest.len()));
    }
    let (field, rest) = rest.split_at(len);
    *bytes = rest;
    Ok(field)
}

fn take_name<T, E: ToString>(
    bytes: &mut &[u8],
    width: usize,
    new: fn(String) -> Result<T, E>,
) -> Result<T, String> {
    let raw = take(bytes, width)?;
    let s = String::from_utf8(raw.to_vec()).map_err(|_| "name is not UTF-8".to_owned())?;
    new(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = PluginName::new("p").unwrap();
        let b = BindingName::new("q.p").unwrap();
        let mut buf = Vec::new();
        encode_kv(&mut buf, &p, "k", Some(b"v"));
        encode_kv(&mut buf, &p, "gone", None);
        encode_cursor(&mut buf, &b, Offset(42));
        encode_ack(&mut buf, &b, Offset(43));
        encode_delivered(&mut buf, &b, Offset(44), 3);
        let d = DestinationName::new("out").unwrap();
        encode_published(&mut buf, &d, Offset(7));
        let full = Record {
            id: "b@1#0".into(),
            key: Some("k".into()),
            headers: vec![("h".into(), "v".into()), ("".into(), "".into())],
            payload: b"body".to_vec(),
            timestamp_ms: 1_700_000_000_000,
            reply_to: Some("inbox".into()),
            correlation_id: Some("c-1".into()),
        };
        let bare = Record {
            id: "x".into(),
            key: None,
            headers: Vec::new(),
            payload: Vec::new(),
            timestamp_ms: 0,
            reply_to: None,
            correlation_id: Some("only".into()),
        };
        encode_outbox(&mut buf, &d, &full);
        encode_outbox(&mut buf, &d, &bare);
        let ops = decode(&buf).unwrap();
        assert_eq!(
            ops,
            [
                Op::KvSet {
                    plugin: p.clone(),
                    key: "k".into(),
                    value: b"v".to_vec()
                },
                Op::KvDelete {
                    plugin: p,
                    key: "gone".into()
                },
                Op::Cursor {
                    binding: b.clone(),
                    offset: Offset(42)
                },
                Op::Ack {
                    binding: b.clone(),
                    offset: Offset(43)
                },
                Op::Delivered {
                    binding: b,
                    offset: Offset(44),
                    count: 3
                },
                Op::Published {
                    log: d.clone(),
                    end: Offset(7)
                },
                Op::Outbox {
                    log: d.clone(),
                    record: full
                },
                Op::Outbox {
                    log: d,
                    record: bare
                },
            ]
        );
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let p = PluginName::new("p").unwrap();
        let mut buf = Vec::new();
        encode_kv(&mut buf, &p, "key", Some(b"value"));
        let record = Record {
            id: "id".into(),
            key: Some("k".into()),
            headers: vec![("h".into(), "v".into())],
            payload: b"p".to_vec(),
            timestamp_ms: 1,
            reply_to: None,
            correlation_id: None,
        };
        encode_outbox(&mut buf, &DestinationName::new("out").unwrap(), &record);
        for cut in 0..buf.len() {
            let _ = decode(&buf[..cut]);
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0xff;
            let _ = decode(&bad);
        }
        assert!(
            decode(&[9])
                .unwrap_err()
                .contains("unknown state operation 9")
        );
    }
}
